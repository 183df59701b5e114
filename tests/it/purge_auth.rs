//! Purges under the caller's grant: `[[clients]] purge_targets` and
//! `purge_paths_per_minute`, with bearer-token callers.

use std::time::Duration;

use crate::purge_support::cloudfront_fake::CloudFrontFake;
use crate::purge_support::{TestServer, aws_credentials};
use cdnsign::proto::purger_client::PurgerClient;
use cdnsign::proto::{GetPurgeRequest, ListPurgesRequest, PurgeKind, PurgeRequest};
use sha2::Digest as _;
use tonic::transport::Channel;

const SITE_TOKEN: &str = "site-publisher-token-0123456789";
const OTHER_TOKEN: &str = "other-publisher-token-9876543210";

fn hash(token: &str) -> String {
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn request<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    r
}

fn purge(target: &str, n: usize) -> PurgeRequest {
    PurgeRequest {
        target: target.into(),
        paths: (0..n).map(|i| format!("/p/{i}")).collect(),
        kind: PurgeKind::File.into(),
        idempotency_key: String::new(),
        max_wait_seconds: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_purge_only_their_targets_within_their_rate() {
    let fake = CloudFrontFake::start("EAUTH00000001", Duration::from_millis(100)).await;
    fake.state
        .lock()
        .expect("state")
        .distributions
        .push("EAUTH00000002".into());
    let data = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace_seconds = 1
[metrics]
listen = ""
[purge]
data_dir = "{data}"
poll_interval_ms = 100
coalesce_window_ms = 0
[[clients]]
name = "site-publisher"
token_sha256 = "{site}"
purge_targets = ["site"]
purge_paths_per_minute = 10
[[clients]]
name = "other-publisher"
token_sha256 = "{other}"
purge_targets = ["other"]
[[targets]]
name = "site"
provider = "cloudfront"
distribution_id = "EAUTH00000001"
endpoint = "{endpoint}"
[[targets]]
name = "other"
provider = "cloudfront"
distribution_id = "EAUTH00000002"
endpoint = "{endpoint}"
"#,
        data = data.path().display(),
        site = hash(SITE_TOKEN),
        other = hash(OTHER_TOKEN),
        endpoint = fake.endpoint,
    );
    let server = TestServer::start(&toml, aws_credentials("AKIDAUTH", "auth-secret")).await;
    let mut client: PurgerClient<Channel> = server.client().await;

    // No identity: refused before the service.
    let err = client
        .purge(request(purge("site", 1), None))
        .await
        .expect_err("anonymous");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    // Its own target: accepted. Another client's target: PERMISSION_DENIED.
    let mine = client
        .purge(request(purge("site", 4), Some(SITE_TOKEN)))
        .await
        .expect("own target")
        .into_inner();
    let err = client
        .purge(request(purge("other", 1), Some(SITE_TOKEN)))
        .await
        .expect_err("other target");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("purge_targets"), "{}", err.message());

    // 4 of 10 paths a minute used: 7 more is over the rate, RESOURCE_EXHAUSTED.
    let err = client
        .purge(request(purge("site", 7), Some(SITE_TOKEN)))
        .await
        .expect_err("rate");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert_eq!(fake.ours().len(), 1, "only the first purge went out");

    // The other client can neither read nor list the site client's purges.
    let theirs = client
        .purge(request(purge("other", 2), Some(OTHER_TOKEN)))
        .await
        .expect("other's own")
        .into_inner();
    let err = client
        .get_purge(request(
            GetPurgeRequest {
                purge_id: mine.purge_id.clone(),
            },
            Some(OTHER_TOKEN),
        ))
        .await
        .expect_err("not theirs");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let listed = client
        .list_purges(request(ListPurgesRequest::default(), Some(OTHER_TOKEN)))
        .await
        .expect("list")
        .into_inner();
    let ids: Vec<&str> = listed.purges.iter().map(|p| p.purge_id.as_str()).collect();
    assert_eq!(ids, [theirs.purge_id.as_str()]);
    let got = client
        .get_purge(request(
            GetPurgeRequest {
                purge_id: mine.purge_id.clone(),
            },
            Some(SITE_TOKEN),
        ))
        .await
        .expect("own purge")
        .into_inner();
    assert_eq!(got.purge_id, mine.purge_id);
    server.stop().await;
}

/// A `WatchPurge` opened before a reload that revokes the watcher's token ends with
/// `UNAUTHENTICATED` at its next update, instead of reporting on under the old grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_watch_ends_when_a_reload_revokes_its_token() {
    use cdnsign::proto::WatchPurgeRequest;

    // In progress for longer than the test runs: every update the watch sees is a poll.
    let fake = CloudFrontFake::start("EAUTH00000003", Duration::from_secs(600)).await;
    let data = tempfile::tempdir().expect("tempdir");
    let path = data.path().join("cdnsign.toml");
    let write = |token: &str| {
        std::fs::write(
            &path,
            format!(
                r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace_seconds = 1
[metrics]
listen = ""
[purge]
data_dir = "{data}"
poll_interval_ms = 50
watch_interval_ms = 50
coalesce_window_ms = 0
[[clients]]
name = "site-publisher"
token_sha256 = "{hash}"
purge_targets = ["site"]
[[targets]]
name = "site"
provider = "cloudfront"
distribution_id = "EAUTH00000003"
endpoint = "{endpoint}"
"#,
                data = data.path().display(),
                hash = hash(token),
                endpoint = fake.endpoint,
            ),
        )
        .expect("write config");
    };
    write(SITE_TOKEN);
    let config = cdnsign::config::Config::load(Some(&path)).expect("config");
    let server =
        cdnsign::server::Server::bind_with(config, aws_credentials("AKIDAUTH", "auth-secret"))
            .await
            .expect("bind");
    let live = server.live();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let mut client = PurgerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let accepted = client
        .purge(request(purge("site", 2), Some(SITE_TOKEN)))
        .await
        .expect("purge")
        .into_inner();
    let mut watch = request(
        WatchPurgeRequest {
            purge_id: accepted.purge_id.clone(),
        },
        Some(SITE_TOKEN),
    );
    watch.set_timeout(Duration::from_secs(30));
    let mut updates = client.watch_purge(watch).await.expect("watch").into_inner();
    let first = updates.message().await.expect("first").expect("an update");
    assert_eq!(first.purge_id, accepted.purge_id);

    write("a-rotated-token-TEST-ONLY-0123456789");
    live.reload().expect("reload");
    // Updates already read before the reload may come first; the refusal ends the stream
    // within a few watch intervals (bounded: 100 messages, the request's 30 s deadline).
    let mut refused = None;
    for _ in 0..100 {
        match updates.message().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let status = refused.expect("the watch is refused after the reload, not ended as OK");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("reloaded"), "{status:?}");
    let _ = stop.send(());
    task.await.expect("task").expect("stop");
}
