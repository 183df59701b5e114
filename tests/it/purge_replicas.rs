//! Purging as a service any number of replicas share: three real `cdnsign serve`
//! processes on one PostgreSQL database (a cluster of the tests' own), a CloudFront fake
//! that enforces the documented in-flight limits, and an Aliyun fake.
//!
//! - purges sent to different replicas never exceed CloudFront's limits together;
//! - an idempotency key holds across replicas (per client), and WatchPurge on any replica
//!   follows a purge made on another;
//! - a replica SIGKILLed while it holds a queue, even in the middle of a send, is replaced
//!   by the others within two lease periods and every path reaches the provider exactly
//!   once (CloudFront by CallerReference, Aliyun counted);
//! - with the database stopped, purge calls are UNAVAILABLE while signing and health
//!   serve; when it is back the waiting work resumes, nothing lost or sent twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cdnsign::proto::purger_client::PurgerClient;
use cdnsign::proto::{PurgeKind, PurgeRequest, PurgeStatus};
use tonic::transport::Channel;

use crate::pg::PgCluster;
use crate::purge_support::aliyun_fake::AliyunFake;
use crate::purge_support::cloudfront_fake::CloudFrontFake;
use crate::purge_support::{Binary, free_port, watch_to_end};

const DIST: &str = "EREPLICAS0001";
const DOMAIN: &str = "cdn.replicas.example";
const ALPHA: &str = "alpha-token-TEST-ONLY";
const BETA: &str = "beta-token-TEST-ONLY";
const ENV: [(&str, &str); 5] = [
    ("AWS_ACCESS_KEY_ID", "AKIDREPLICAS"),
    ("AWS_SECRET_ACCESS_KEY", "replicas-secret"),
    ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIreplicas"),
    ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "replicas-ali-secret"),
    ("RUST_LOG", "info"),
];

/// One replica's config: same database, targets and clients as the others.
fn config(dir: &Path, name: &str, port: u16, database_url: &str, cf: &str, ali: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let key = crate::common::repo("config/dev-keys/TEST-ONLY-cloudfront.pem");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_grace_seconds = 1
# Watching needs no token here; purges carry one (keys are per client).
allow_unauthenticated = true
[metrics]
listen = ""
[signing]
default_key_id = "K2JCJMDEHXQW5F"
[[keys]]
id = "K2JCJMDEHXQW5F"
path = "{key}"
[purge]
database_url = "{database_url}"
lease_seconds = 1
poll_interval_ms = 100
coalesce_window_ms = 0
watch_interval_ms = 100
retry_base_ms = 20
retry_max_ms = 200
background_deadline_seconds = 5
[[targets]]
name = "site"
provider = "cloudfront"
distribution_id = "{DIST}"
endpoint = "{cf}"
[[targets]]
name = "ali"
provider = "aliyun"
domain = "{DOMAIN}"
endpoint = "{ali}"
scheme = "https"
[[clients]]
name = "alpha"
token_sha256 = "{alpha}"
keys = ["K2JCJMDEHXQW5F"]
url_prefixes = ["https://d.example/"]
purge_targets = ["site", "ali"]
[[clients]]
name = "beta"
token_sha256 = "{beta}"
purge_targets = ["site", "ali"]
"#,
        key = key.display(),
        alpha = crate::common::sha256_hex(ALPHA),
        beta = crate::common::sha256_hex(BETA),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

struct Replicas {
    _dir: tempfile::TempDir,
    procs: Vec<Option<Binary>>,
}

impl Replicas {
    fn start(n: usize, database_url: &str, cf: &str, ali: &str) -> Replicas {
        let dir = tempfile::tempdir().expect("tempdir");
        let procs = (0..n)
            .map(|i| {
                let port = free_port();
                let cfg = config(dir.path(), &format!("r{i}"), port, database_url, cf, ali);
                Some(Binary::start(&cfg, port, &ENV))
            })
            .collect();
        Replicas { _dir: dir, procs }
    }

    fn get(&self, i: usize) -> &Binary {
        self.procs[i].as_ref().expect("running")
    }

    async fn client(&self, i: usize) -> PurgerClient<Channel> {
        self.get(i).client().await
    }

    fn kill(&mut self, i: usize) -> String {
        let mut b = self.procs[i].take().expect("running");
        b.kill();
        b.logs()
    }

    /// The running replicas, by index.
    fn alive(&self) -> Vec<usize> {
        (0..self.procs.len())
            .filter(|&i| self.procs[i].is_some())
            .collect()
    }

    /// The replica holding the lease on the queue of `resource` (a distribution or a
    /// domain), i.e. the one sending its purges: read from the store, where owners are
    /// named `host-pid-random`. Any replica may have claimed the queue (its own loop can
    /// beat the kick of the replica that took the call), so a test that kills "the sender"
    /// asks.
    async fn lease_holder(&self, database_url: &str, resource: &str) -> usize {
        let (client, conn) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
            .await
            .expect("connect to the store");
        let conn = tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT lease_owner FROM purge_queues WHERE resource = $1",
                &[&resource],
            )
            .await
            .expect("the queue's row");
        let owner: String = row.get(0);
        drop(client);
        let _ = conn.await;
        let pid = owner.rsplit('-').nth(1).unwrap_or_default().to_owned();
        self.alive()
            .into_iter()
            .find(|&i| self.get(i).pid().to_string() == pid)
            .unwrap_or_else(|| panic!("no running replica holds the lease ({owner:?})"))
    }
}

fn request(
    target: &str,
    paths: Vec<String>,
    key: &str,
    token: &str,
) -> tonic::Request<PurgeRequest> {
    let mut req = tonic::Request::new(PurgeRequest {
        target: target.into(),
        paths,
        kind: PurgeKind::File.into(),
        idempotency_key: key.into(),
        max_wait_seconds: 0,
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("meta"),
    );
    req
}

async fn watch(client: &mut PurgerClient<Channel>, id: &str) -> PurgeStatus {
    let seen = watch_to_end(client, id, Duration::from_secs(60)).await;
    seen.last().expect("messages").status()
}

/// Every path sent to CloudFront went out in exactly one invalidation.
fn assert_exactly_once(fake: &CloudFrontFake, expected: usize) {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for inv in fake.ours() {
        for p in inv.paths {
            *count.entry(p).or_default() += 1;
        }
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(count.len(), expected, "every path reached CloudFront");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_limits_keys_and_status() {
    let pg = crate::pg::shared();
    let db = pg.create_db().await;
    let cf = CloudFrontFake::start(DIST, Duration::from_millis(700)).await;
    let ali = AliyunFake::start("LTAIreplicas", "replicas-ali-secret").await;
    let r = Replicas::start(3, &pg.url(&db), &cf.endpoint, &ali.endpoint);

    // 3 × 2,000 files and 3 × 10 directories, sent to different replicas at once: 6,000
    // files and 30 wildcards, twice CloudFront's limits.
    let mut calls = Vec::new();
    for i in 0..3 {
        let mut c = r.client(i).await;
        let mut paths: Vec<String> = (0..2_000).map(|n| format!("/r{i}/{n}.js")).collect();
        paths.extend((0..10).map(|n| format!("/r{i}/dir{n}/*")));
        calls.push(tokio::spawn(async move {
            c.purge(request("site", paths, &format!("load-{i}"), ALPHA))
                .await
                .expect("purge")
                .into_inner()
        }));
    }
    let mut ids = Vec::new();
    for call in calls {
        ids.push(call.await.expect("join").purge_id);
    }
    // WatchPurge on replica 3 follows purges made on replicas 1 and 2 to the end.
    let mut c3 = r.client(2).await;
    for id in &ids {
        assert_eq!(
            watch(&mut c3, id).await,
            PurgeStatus::PurgeCompleted,
            "{id}"
        );
    }
    {
        let st = cf.state.lock().expect("state");
        assert!(
            st.peak.0 <= 3_000 && st.peak.1 <= 15,
            "limits exceeded: {:?}",
            st.peak
        );
    }
    assert!(
        !cf.refused()
            .iter()
            .any(|c| c == "TooManyInvalidationsInProgress"),
        "a replica sent past the room: {:?}",
        cf.refused()
    );
    assert_exactly_once(&cf, 3 * 2_010);
    let created = cf.state.lock().expect("state").created;

    // A key used on replica 1 and repeated on replica 2: the same purge, nothing sent.
    let paths: Vec<String> = (0..3).map(|n| format!("/again/{n}")).collect();
    let first = r
        .client(0)
        .await
        .purge(request("site", paths.clone(), "release-1", ALPHA))
        .await
        .expect("purge")
        .into_inner();
    assert_eq!(
        watch(&mut c3, &first.purge_id).await,
        PurgeStatus::PurgeCompleted
    );
    let again = r
        .client(1)
        .await
        .purge(request("site", paths.clone(), "release-1", ALPHA))
        .await
        .expect("purge")
        .into_inner();
    assert!(again.deduplicated);
    assert_eq!(again.purge_id, first.purge_id);
    assert_eq!(
        cf.state.lock().expect("state").created,
        created + 1,
        "nothing sent again"
    );
    // Another client with the same key gets its own purge (and learns nothing of alpha's).
    let beta = r
        .client(2)
        .await
        .purge(request("site", paths, "release-1", BETA))
        .await
        .expect("purge")
        .into_inner();
    assert!(!beta.deduplicated);
    assert_ne!(beta.purge_id, first.purge_id);
    assert_ne!(
        beta.jobs[0].caller_reference,
        first.jobs[0].caller_reference
    );
    assert_eq!(
        watch(&mut c3, &beta.purge_id).await,
        PurgeStatus::PurgeCompleted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_send_is_finished_by_the_others_exactly_once() {
    let pg = crate::pg::shared();
    let db = pg.create_db().await;
    let cf = CloudFrontFake::start(DIST, Duration::from_millis(500)).await;
    let ali = AliyunFake::start("LTAIreplicas", "replicas-ali-secret").await;
    let mut r = Replicas::start(3, &pg.url(&db), &cf.endpoint, &ali.endpoint);

    // CloudFront makes the invalidation, then the replica sending it dies before it hears
    // the id (the one that took the call, unless another one's loop claimed the queue first).
    cf.state.lock().expect("state").create_delay = Duration::from_secs(60);
    let paths: Vec<String> = (0..100).map(|n| format!("/kill/{n}.png")).collect();
    let mut c1 = r.client(0).await;
    // A deadline well past the kill: the call is still waiting for CloudFront when the
    // replica dies, however slow this machine is (the default would end the pass first).
    let mut req = request("site", paths, "kill-cf", ALPHA);
    req.set_timeout(Duration::from_secs(60));
    let call = tokio::spawn(async move { c1.purge(req).await });
    tokio::time::timeout(Duration::from_secs(30), cf.created_signal.notified())
        .await
        .expect("the invalidation was made");
    let sender = r.lease_holder(&pg.url(&db), DIST).await;
    r.kill(sender);
    cf.state.lock().expect("state").create_delay = Duration::ZERO;
    let answer = call.await.expect("join");
    if sender == 0 {
        assert!(answer.is_err(), "the caller lost its answer");
    }

    let survivor = r.alive()[0];
    let mut c2 = r.client(survivor).await;
    let mut list = c2
        .list_purges(tonic::Request::new(
            cdnsign::proto::ListPurgesRequest::default(),
        ))
        .await
        .expect("list")
        .into_inner()
        .purges;
    let id = list
        .pop()
        .expect("the purge was stored before the send")
        .purge_id;
    assert_eq!(watch(&mut c2, &id).await, PurgeStatus::PurgeCompleted);
    {
        let st = cf.state.lock().expect("state");
        assert_eq!(st.created, 1, "one invalidation");
        assert!(
            st.replayed >= 1,
            "the resend carried the same CallerReference"
        );
    }
    assert_exactly_once(&cf, 100);

    // Aliyun: the refresh is made, the replica sending it dies before it hears the task id;
    // the last replica finds the task (DescribeRefreshTasks) instead of refreshing again.
    ali.state.lock().expect("state").refresh_delay = Duration::from_secs(60);
    let urls: Vec<String> = (0..5)
        .map(|n| format!("https://{DOMAIN}/k/{n}.css"))
        .collect();
    let caller = r.alive()[0];
    let mut c2b = r.client(caller).await;
    let mut req = request("ali", urls, "kill-ali", ALPHA);
    req.set_timeout(Duration::from_secs(60));
    let call = tokio::spawn(async move { c2b.purge(req).await });
    tokio::time::timeout(Duration::from_secs(30), ali.refreshed.notified())
        .await
        .expect("the refresh was made");
    let sender = r.lease_holder(&pg.url(&db), DOMAIN).await;
    r.kill(sender);
    ali.state.lock().expect("state").refresh_delay = Duration::ZERO;
    let answer = call.await.expect("join");
    if sender == caller {
        assert!(answer.is_err(), "the caller lost its answer");
    }
    let last = r.alive()[0];
    let mut c3 = r.client(last).await;
    let list = c3
        .list_purges(tonic::Request::new(cdnsign::proto::ListPurgesRequest {
            target: "ali".into(),
            ..Default::default()
        }))
        .await
        .expect("list")
        .into_inner()
        .purges;
    let id = list.first().expect("stored").purge_id.clone();
    assert_eq!(watch(&mut c3, &id).await, PurgeStatus::PurgeCompleted);
    assert_eq!(
        ali.calls("RefreshObjectCaches").len(),
        1,
        "refreshed exactly once"
    );
    assert!(
        !ali.calls("DescribeRefreshTasks").is_empty(),
        "reconciled first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_purges_are_unavailable_and_signing_serves() {
    let pg = PgCluster::start();
    let db = pg.create_db().await;
    let cf = CloudFrontFake::start(DIST, Duration::from_millis(1_000)).await;
    let ali = AliyunFake::start("LTAIreplicas", "replicas-ali-secret").await;
    let r = Replicas::start(2, &pg.url(&db), &cf.endpoint, &ali.endpoint);

    // 5,000 paths: 3,000 go out, 2,000 wait for room.
    let paths: Vec<String> = (0..5_000).map(|n| format!("/down/{n}.txt")).collect();
    let mut c = r.client(0).await;
    let resp = c
        .purge(request("site", paths, "down-1", ALPHA))
        .await
        .expect("purge")
        .into_inner();

    pg.stop();
    let err = c
        .purge(request("site", vec!["/x".into()], "down-2", ALPHA))
        .await
        .expect_err("no database");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        !err.message().contains(crate::pg::PASSWORD),
        "{}",
        err.message()
    );
    // Signing and health do not depend on the purge store.
    let channel = Channel::from_shared(format!("http://{}", r.get(1).addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut signer = cdnsign::proto::signer_client::SignerClient::new(channel.clone());
    let mut sign = tonic::Request::new(cdnsign::proto::SignUrlsRequest {
        items: vec![cdnsign::proto::SignItem {
            url: "https://d.example/a.ts".into(),
            ..Default::default()
        }],
        ttl_seconds: 60,
        ..Default::default()
    });
    sign.metadata_mut().insert(
        "authorization",
        format!("Bearer {ALPHA}").parse().expect("meta"),
    );
    assert_eq!(
        signer
            .sign_urls(sign)
            .await
            .expect("signs")
            .into_inner()
            .signed,
        1
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "cdnsign.v1.Signer".into(),
        })
        .await
        .expect("health");
    assert_eq!(status.get_ref().status, 1, "Signer stays SERVING");

    pg.restart();
    let mut c2 = r.client(1).await;
    assert_eq!(
        watch(&mut c2, &resp.purge_id).await,
        PurgeStatus::PurgeCompleted
    );
    assert_exactly_once(&cf, 5_000);
}
