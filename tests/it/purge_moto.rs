//! Wire compatibility with CloudFront, against moto (the AWS emulator) on 127.0.0.1.
//!
//! moto enforces no limits, ignores CallerReference and reports every invalidation
//! `Completed` at once; limits, waiting and InProgress→Completed are tested against our
//! own fake in `purge_cloudfront_fake.rs`. Here: the SDK's requests are what moto (and so
//! botocore's model of CloudFront) accepts, the right invalidations land, idempotency
//! sends nothing new, and — with moto's IAM checks on — our SigV4 signature verifies.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::purge_support::{
    Moto, TestServer, aws_credentials, base_config, python_json, watch_to_end,
};
use cdnsign::proto::{
    GetPurgeRequest, JobStatus, ListPurgesRequest, PurgeKind, PurgeRequest, PurgeStatus,
};

fn target(dist: &str, domain: &str, endpoint: &str) -> String {
    format!(
        r#"
[[targets]]
name = "site"
provider = "cloudfront"
distribution_id = "{dist}"
domain = "{domain}"
aliases = ["cdn.example.com"]
endpoint = "{endpoint}"
"#
    )
}

fn invalidations(moto: &Moto, dist: &str, key: &str, secret: &str) -> Vec<serde_json::Value> {
    python_json(
        "moto_cloudfront.py",
        &[
            "invalidations",
            "--endpoint",
            &moto.endpoint,
            "--distribution",
            dist,
            "--key",
            key,
            "--secret",
            secret,
        ],
    )
    .as_array()
    .cloned()
    .expect("list")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_paths_become_the_right_invalidations_in_moto() {
    let moto = Moto::start(&[]);
    let setup = python_json(
        "moto_cloudfront.py",
        &["setup", "--endpoint", &moto.endpoint],
    );
    let dist = setup["distribution_id"].as_str().expect("id").to_owned();
    let domain = setup["domain"].as_str().expect("domain").to_owned();
    let data = tempfile::tempdir().expect("tempdir");
    let toml = base_config(data.path()) + &target(&dist, &domain, &moto.endpoint);
    let server = TestServer::start(&toml, aws_credentials("testing", "testing")).await;
    let mut client = server.client().await;

    let mut paths: Vec<String> = (0..4_998).map(|i| format!("/img/{i}.png")).collect();
    paths.push(format!("https://{domain}/from-url.html"));
    paths.push("https://cdn.example.com/caf\u{e9} menu.html".into());
    paths.push("/bad*/wildcard".into());
    paths.push("https://elsewhere.example.org/x".into());
    let started = std::time::Instant::now();
    let resp = client
        .purge(PurgeRequest {
            target: "site".into(),
            paths: paths.clone(),
            kind: PurgeKind::File.into(),
            idempotency_key: "release-42".into(),
            max_wait_seconds: 0,
        })
        .await
        .expect("purge")
        .into_inner();
    eprintln!("Purge of 5,002 items answered in {:?}", started.elapsed());
    assert!(resp.purge_id.starts_with("pg_"));
    assert!(!resp.deduplicated);
    let rejected: Vec<&str> = resp.rejected.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        rejected,
        ["/bad*/wildcard", "https://elsewhere.example.org/x"]
    );
    assert_eq!(
        resp.jobs.len(),
        2,
        "5,000 paths split at the 3,000-path request maximum"
    );
    assert_eq!(resp.jobs[0].paths, 3_000);
    assert_eq!(resp.jobs[1].paths, 2_000);
    assert_eq!(resp.paths_billed, 5_000);
    for j in &resp.jobs {
        assert_eq!(j.provider, "cloudfront");
        assert_eq!(j.resource, dist);
        assert!(j.caller_reference.starts_with("cdnsign-"));
    }

    // Followed to completion through WatchPurge.
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(30)).await;
    let last = seen.last().expect("at least one message");
    assert_eq!(last.status(), PurgeStatus::PurgeCompleted, "{last:?}");
    assert!(last.jobs.iter().all(|j| j.status() == JobStatus::Completed));
    assert!(last.jobs.iter().all(|j| !j.provider_job_id.is_empty()));

    // What moto holds: exactly two invalidations with exactly our 5,000 paths.
    let held = invalidations(&moto, &dist, "testing", "testing");
    assert_eq!(held.len(), 2, "{held:?}");
    let mut got = BTreeSet::new();
    let mut refs = BTreeSet::new();
    for inv in &held {
        refs.insert(inv["caller_reference"].as_str().expect("ref").to_owned());
        for p in inv["paths"].as_array().expect("paths") {
            assert!(
                got.insert(p.as_str().expect("path").to_owned()),
                "duplicate {p}"
            );
        }
    }
    let mut want: BTreeSet<String> = (0..4_998).map(|i| format!("/img/{i}.png")).collect();
    want.insert("/from-url.html".into());
    want.insert("/caf%C3%A9%20menu.html".into());
    assert_eq!(got, want);
    let ours: BTreeSet<String> = last
        .jobs
        .iter()
        .map(|j| j.caller_reference.clone())
        .collect();
    assert_eq!(refs, ours);
    let ids: BTreeSet<String> = held
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect();
    let job_ids: BTreeSet<String> = last
        .jobs
        .iter()
        .map(|j| j.provider_job_id.clone())
        .collect();
    assert_eq!(ids, job_ids);

    // The same key again: the same purge, nothing new upstream.
    let again = client
        .purge(PurgeRequest {
            target: "site".into(),
            paths,
            kind: PurgeKind::File.into(),
            idempotency_key: "release-42".into(),
            max_wait_seconds: 0,
        })
        .await
        .expect("purge again")
        .into_inner();
    assert!(again.deduplicated);
    assert_eq!(again.purge_id, resp.purge_id);
    assert_eq!(invalidations(&moto, &dist, "testing", "testing").len(), 2);

    // The same key for a different request is refused.
    let err = client
        .purge(PurgeRequest {
            target: "site".into(),
            paths: vec!["/other".into()],
            kind: PurgeKind::File.into(),
            idempotency_key: "release-42".into(),
            max_wait_seconds: 0,
        })
        .await
        .expect_err("key reuse");
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");

    // A directory purge, then GetPurge and ListPurges (newest first, paginated).
    let dir = client
        .purge(PurgeRequest {
            target: "site".into(),
            paths: vec!["/assets".into()],
            kind: PurgeKind::Directory.into(),
            idempotency_key: String::new(),
            max_wait_seconds: 0,
        })
        .await
        .expect("dir purge")
        .into_inner();
    assert_eq!(dir.jobs[0].wildcard_paths, 1);
    let got = client
        .get_purge(GetPurgeRequest {
            purge_id: resp.purge_id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.status(), PurgeStatus::PurgeCompleted);
    assert_eq!(got.jobs.len(), 2);
    let page1 = client
        .list_purges(ListPurgesRequest {
            target: "site".into(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page1.purges.len(), 1);
    assert_eq!(page1.purges[0].purge_id, dir.purge_id);
    let page2 = client
        .list_purges(ListPurgesRequest {
            target: "site".into(),
            page_size: 1,
            page_token: page1.next_page_token.clone(),
        })
        .await
        .expect("list 2")
        .into_inner();
    assert_eq!(page2.purges[0].purge_id, resp.purge_id);
    assert!(page2.next_page_token.is_empty());
    let held = invalidations(&moto, &dist, "testing", "testing");
    assert!(
        held.iter()
            .any(|i| i["paths"] == serde_json::json!(["/assets/*"])),
        "{held:?}"
    );

    // Unknown targets and purges are NOT_FOUND.
    let err = client
        .purge(PurgeRequest {
            target: "nope".into(),
            paths: vec!["/a".into()],
            ..Default::default()
        })
        .await
        .expect_err("unknown target");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client
        .get_purge(GetPurgeRequest {
            purge_id: "pg_missing".into(),
        })
        .await
        .expect_err("unknown purge");
    assert_eq!(err.code(), tonic::Code::NotFound);
    server.stop().await;
}

fn moto_state(moto: &Moto) -> Vec<serde_json::Value> {
    python_json(
        "moto_cloudfront.py",
        &["moto-state", "--endpoint", &moto.endpoint],
    )
    .as_array()
    .cloned()
    .expect("list")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_with_iam_checks_accepts_our_sigv4_and_refuses_a_wrong_secret() {
    // moto authenticates every request after the first three (the helper's IAM setup).
    let moto = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    let setup = python_json(
        "moto_cloudfront.py",
        &["setup", "--endpoint", &moto.endpoint, "--iam"],
    );
    let dist = setup["distribution_id"].as_str().expect("id").to_owned();
    let domain = setup["domain"].as_str().expect("domain").to_owned();
    let key = setup["access_key_id"].as_str().expect("key").to_owned();
    let secret = setup["secret_access_key"]
        .as_str()
        .expect("secret")
        .to_owned();
    let data = tempfile::tempdir().expect("tempdir");
    let toml = base_config(data.path()) + &target(&dist, &domain, &moto.endpoint);

    let server = TestServer::start(&toml, aws_credentials(&key, &secret)).await;
    let mut client = server.client().await;
    let resp = client
        .purge(PurgeRequest {
            target: "site".into(),
            paths: vec!["/index.html".into(), "/img/*".into()],
            kind: PurgeKind::File.into(),
            idempotency_key: "iam-1".into(),
            max_wait_seconds: 0,
        })
        .await
        .expect("signed purge accepted")
        .into_inner();
    assert_eq!(resp.jobs.len(), 1);
    assert!(!resp.jobs[0].provider_job_id.is_empty(), "{resp:?}");
    let held = moto_state(&moto);
    assert_eq!(held.len(), 1);
    assert_eq!(
        held[0]["paths"],
        serde_json::json!(["/index.html", "/img/*"])
    );
    assert_eq!(
        held[0]["caller_reference"].as_str(),
        Some(resp.jobs[0].caller_reference.as_str())
    );
    server.stop().await;

    // Same key id, wrong secret: moto's signature check refuses, we say PERMISSION_DENIED
    // and never echo the secret.
    let data2 = tempfile::tempdir().expect("tempdir");
    let toml2 = base_config(data2.path()) + &target(&dist, &domain, &moto.endpoint);
    let wrong = "WrongSecretWrongSecretWrongSecret0000000";
    let server = TestServer::start(&toml2, aws_credentials(&key, wrong)).await;
    let mut client = server.client().await;
    let err = client
        .purge(PurgeRequest {
            target: "site".into(),
            paths: vec!["/index.html".into()],
            kind: PurgeKind::File.into(),
            idempotency_key: "iam-2".into(),
            max_wait_seconds: 0,
        })
        .await
        .expect_err("wrong secret refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(!err.message().contains(wrong));
    assert_eq!(moto_state(&moto).len(), 1, "nothing new landed");
    server.stop().await;
}
