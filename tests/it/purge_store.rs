//! One contract, two engines: the embedded redb store and PostgreSQL (a cluster of the
//! tests' own, see `pg`) pass the same suite. Time is given explicitly, so lease expiry is
//! tested without waiting.

use std::sync::Arc;

use cdnsign::purge::config::ProviderKind;
use cdnsign::purge::model::{JobAction, JobRecord, JobState, PurgeKind, PurgeRecord, QueueKey};
use cdnsign::purge::store::embedded::EmbeddedStore;
use cdnsign::purge::store::postgres::PgStore;
use cdnsign::purge::store::{Inserted, PurgeStore, StoreError};

const T0: i64 = 1_800_000_000_000;
pub(crate) const LEASE: i64 = 30_000;

pub(crate) fn job(resource: &str, paths: &[&str]) -> JobRecord {
    JobRecord::waiting(
        ProviderKind::Cloudfront,
        resource,
        JobAction::Invalidate,
        paths.iter().map(|p| (*p).to_owned()).collect(),
        0,
        T0,
    )
}

pub(crate) fn purge(
    id: &str,
    client: &str,
    key: &str,
    target: &str,
    jobs: Vec<JobRecord>,
) -> PurgeRecord {
    PurgeRecord {
        id: id.into(),
        seq: 0,
        client: client.into(),
        idempotency_key: key.into(),
        fingerprint: format!("fp-{key}"),
        target: target.into(),
        kind: PurgeKind::File,
        created_at_ms: T0,
        rejected: vec![],
        jobs,
        quota: vec![],
    }
}

pub(crate) fn queue(resource: &str) -> QueueKey {
    QueueKey {
        provider: ProviderKind::Cloudfront,
        resource: resource.into(),
    }
}

pub(crate) fn new_id(r: Inserted) -> PurgeRecord {
    match r {
        Inserted::New(r) => r,
        Inserted::Existing(r) => panic!("expected a new purge, got {}", r.id),
    }
}

/// The contract every engine keeps (see `cdnsign::purge::store`).
async fn contract(s: Arc<dyn PurgeStore>) {
    // Idempotency keys are per client.
    let a = new_id(
        s.insert(purge(
            "pg_a",
            "alice",
            "k1",
            "site",
            vec![job("E1", &["/a"])],
        ))
        .await
        .expect("insert"),
    );
    assert!(a.seq > 0);
    match s
        .insert(purge(
            "pg_a2",
            "alice",
            "k1",
            "site",
            vec![job("E1", &["/x"])],
        ))
        .await
        .expect("insert")
    {
        Inserted::Existing(r) => assert_eq!(r.id, "pg_a"),
        Inserted::New(r) => panic!("key reused: {}", r.id),
    }
    let b = new_id(
        s.insert(purge(
            "pg_b",
            "bob",
            "k1",
            "other",
            vec![job("E1", &["/b1", "/b2"]), job("E2", &["/b3"])],
        ))
        .await
        .expect("bob's k1 is his own"),
    );
    assert!(b.seq > a.seq);
    assert_eq!(
        s.get_by_key("alice", "k1")
            .await
            .expect("get")
            .map(|r| r.id),
        Some("pg_a".into())
    );
    assert_eq!(
        s.get_by_key("bob", "k1").await.expect("get").map(|r| r.id),
        Some("pg_b".into())
    );
    assert_eq!(s.get_by_key("carol", "k1").await.expect("get"), None);
    let got = s.get("pg_b").await.expect("get").expect("stored");
    assert_eq!(got.jobs.len(), 2);
    assert_eq!(got.jobs[0].paths, ["/b1", "/b2"]);
    assert_eq!(s.get("pg_nope").await.expect("get"), None);

    // Listing: newest first, paged by sequence, by target.
    let all = s.list(None, 10, None).await.expect("list");
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["pg_b", "pg_a"]
    );
    let page = s.list(Some(b.seq), 10, None).await.expect("list");
    assert_eq!(
        page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["pg_a"]
    );
    let site = s.list(None, 10, Some("site")).await.expect("list");
    assert_eq!(
        site.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["pg_a"]
    );

    // Leases: one holder at a time; expiry hands the queue on; writes are fenced.
    let l1 = s
        .claim_queue(&queue("E1"), "r1", T0, LEASE)
        .await
        .expect("claim")
        .expect("free");
    assert!(
        s.claim_queue(&queue("E1"), "r2", T0 + 1, LEASE)
            .await
            .expect("claim")
            .is_none()
    );
    // A replica claims only queues it serves (has a [[targets]] entry for): one whose
    // config lacks a queue never takes it, even when it is free.
    assert!(
        s.claim("r2", T0 + 1, LEASE, &[queue("E9")])
            .await
            .expect("claim")
            .is_none(),
        "E2 is free but r2 does not serve it"
    );
    let other = s
        .claim("r2", T0 + 1, LEASE, &[queue("E1"), queue("E2")])
        .await
        .expect("claim")
        .expect("E2 is free");
    assert_eq!(other.queue, queue("E2"));
    assert!(
        s.claim("r3", T0 + 2, LEASE, &[queue("E1"), queue("E2")])
            .await
            .expect("claim")
            .is_none(),
        "every queue is held"
    );
    assert!(
        s.claim("r3", T0 + 2, LEASE, &[queue("E2")])
            .await
            .expect("claim")
            .is_none()
    );

    // FIFO: oldest purge first, each purge's jobs in order.
    let q = s.queue_jobs(&l1).await.expect("jobs");
    let order: Vec<(String, u32)> = q.iter().map(|j| (j.purge_id.clone(), j.index)).collect();
    assert_eq!(order, [("pg_a".to_owned(), 0), ("pg_b".to_owned(), 0)]);
    assert_eq!(q[1].target, "other");

    let l1 = s.renew(&l1, T0 + 10_000, LEASE).await.expect("renew");
    // Not renewed past its end: another replica may claim it, with a new epoch.
    let l2 = s
        .claim("r2", l1.until_ms + 1, LEASE, &[queue("E1")])
        .await
        .expect("claim")
        .expect("expired");
    assert_eq!(l2.queue, queue("E1"));
    assert!(l2.epoch > l1.epoch);
    let mut sent = q[0].job.clone();
    sent.state = JobState::Sending;
    match s.update_job(&l1, T0, "pg_a", 0, &sent).await {
        Err(StoreError::LeaseLost(q)) => assert_eq!(q, queue("E1")),
        other => panic!("a taken-over lease wrote: {other:?}"),
    }
    assert!(matches!(
        s.renew(&l1, T0, LEASE).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert_eq!(
        s.get("pg_a").await.expect("get").expect("a").jobs[0].state,
        JobState::Waiting
    );

    // The holder writes; a finished purge is dated, and retention removes it and its key.
    s.update_job(&l2, T0 + 5, "pg_a", 0, &sent)
        .await
        .expect("fenced write");
    let mut done = sent.clone();
    done.state = JobState::Completed;
    s.update_job(&l2, T0 + 6, "pg_a", 0, &done)
        .await
        .expect("complete");
    assert!(s.get("pg_a").await.expect("get").expect("a").is_finished());
    let q = s.queue_jobs(&l2).await.expect("jobs");
    assert_eq!(q.len(), 1, "finished jobs leave the queue");

    // Splitting a waiting job: the part that fits becomes a job of its own.
    let mut part = q[0].job.clone();
    part.paths = vec!["/b1".into()];
    part.state = JobState::Sending;
    let mut rest = q[0].job.clone();
    rest.paths = vec!["/b2".into()];
    let idx = s
        .split_job(&l2, T0 + 7, "pg_b", 0, &part, &rest)
        .await
        .expect("split");
    assert_eq!(idx, 2);
    let b = s.get("pg_b").await.expect("get").expect("b");
    assert_eq!(b.jobs.len(), 3);
    assert_eq!(b.jobs[0].paths, ["/b2"]);
    assert_eq!(b.jobs[2].paths, ["/b1"]);
    let q = s.queue_jobs(&l2).await.expect("jobs");
    assert_eq!(q.iter().map(|j| j.index).collect::<Vec<_>>(), [0, 2]);

    // Released: claimable at once.
    s.release(&l2).await.expect("release");
    let l3 = s
        .claim_queue(&queue("E1"), "r3", T0 + 8, LEASE)
        .await
        .expect("claim")
        .expect("released");
    assert!(l3.epoch > l2.epoch);

    assert_eq!(
        s.delete_finished_before(T0 + 6).await.expect("retention"),
        0,
        "finished at T0+6"
    );
    assert_eq!(
        s.delete_finished_before(T0 + 7).await.expect("retention"),
        1
    );
    assert_eq!(s.get("pg_a").await.expect("get"), None);
    assert_eq!(s.get_by_key("alice", "k1").await.expect("get"), None);
    new_id(
        s.insert(purge(
            "pg_a3",
            "alice",
            "k1",
            "site",
            vec![job("E1", &["/a"])],
        ))
        .await
        .expect("the key is free after retention"),
    );

    // A purge whose every job failed frees its key: the same key sends again.
    let lf = s
        .claim_queue(&queue("E9"), "r1", T0, LEASE)
        .await
        .expect("claim");
    assert!(lf.is_none(), "no queue E9 before a job needs it");
    new_id(
        s.insert(purge(
            "pg_f",
            "alice",
            "retry",
            "site",
            vec![job("E9", &["/f"])],
        ))
        .await
        .expect("insert"),
    );
    let lf = s
        .claim_queue(&queue("E9"), "r1", T0, LEASE)
        .await
        .expect("claim")
        .expect("E9");
    let mut failed = job("E9", &["/f"]);
    failed.state = JobState::Failed;
    s.update_job(&lf, T0 + 1, "pg_f", 0, &failed)
        .await
        .expect("fail");
    let again = new_id(
        s.insert(purge(
            "pg_f2",
            "alice",
            "retry",
            "site",
            vec![job("E9", &["/f"])],
        ))
        .await
        .expect("insert"),
    );
    assert_eq!(again.id, "pg_f2");
    assert_eq!(
        s.get_by_key("alice", "retry")
            .await
            .expect("get")
            .map(|r| r.id),
        Some("pg_f2".into())
    );

    // Rate buckets: shared arithmetic, refused without taking.
    assert_eq!(
        s.take_tokens("alice", "purge_paths", 50.0, 1.0, 60.0, T0)
            .await
            .expect("take"),
        Ok(())
    );
    assert_eq!(
        s.take_tokens("alice", "purge_paths", 20.0, 1.0, 60.0, T0)
            .await
            .expect("take"),
        Err(10.0)
    );
    assert_eq!(
        s.take_tokens("alice", "purge_paths", 20.0, 1.0, 60.0, T0 + 10_000)
            .await
            .expect("take"),
        Ok(())
    );
    assert_eq!(
        s.take_tokens("bob", "purge_paths", 60.0, 1.0, 60.0, T0)
            .await
            .expect("take"),
        Ok(())
    );

    // Unsent paths reserve quota only for the day they may go in: a job put off past
    // `due_before_ms` is not counted; sent or finished jobs never are.
    let aliyun = |paths: &[&str], not_before_ms: i64| {
        let mut j = JobRecord::waiting(
            ProviderKind::Aliyun,
            "cdn.example.com",
            JobAction::RefreshFile,
            paths.iter().map(|p| (*p).to_owned()).collect(),
            0,
            T0,
        );
        j.not_before_ms = not_before_ms;
        j
    };
    let reset = T0 + 3_600_000;
    new_id(
        s.insert(purge(
            "pg_q1",
            "alice",
            "quota",
            "ali",
            vec![
                aliyun(
                    &["https://cdn.example.com/a", "https://cdn.example.com/b"],
                    0,
                ),
                aliyun(&["https://cdn.example.com/c"], T0 + 5_000),
                aliyun(&["https://cdn.example.com/tomorrow"], reset),
            ],
        ))
        .await
        .expect("insert"),
    );
    let unsent = |due_before| {
        let s = Arc::clone(&s);
        async move {
            s.unsent_paths(ProviderKind::Aliyun, JobAction::RefreshFile, due_before)
                .await
                .expect("unsent")
        }
    };
    assert_eq!(unsent(reset).await, 3, "due before the reset: 2 + 1");
    assert_eq!(unsent(reset + 1).await, 4, "and the one put off to it");
    assert_eq!(unsent(i64::MAX).await, 4);
    assert_eq!(
        s.unsent_paths(ProviderKind::Aliyun, JobAction::RefreshDirectory, i64::MAX)
            .await
            .expect("unsent"),
        0,
        "per action"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_engine_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    contract(Arc::new(EmbeddedStore::open(dir.path()).expect("open"))).await;
    contract(Arc::new(EmbeddedStore::in_memory().expect("memory"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_engine_keeps_the_contract() {
    let pg = crate::pg::shared();
    let db = pg.create_db().await;
    contract(Arc::new(
        PgStore::connect(&pg.url(&db)).await.expect("connect"),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_survives_a_reopen_and_refuses_a_second_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = EmbeddedStore::open(dir.path()).expect("open");
        new_id(
            s.insert(purge("pg_1", "", "k", "site", vec![job("E1", &["/a"])]))
                .await
                .expect("insert"),
        );
        let second = EmbeddedStore::open(dir.path());
        assert!(
            matches!(&second, Err(StoreError::Unavailable(m)) if m.contains("database_url")),
            "{second:?}"
        );
    }
    let s = EmbeddedStore::open(dir.path()).expect("reopen");
    let l = s
        .claim("r", T0, LEASE, &[queue("E1")])
        .await
        .expect("claim")
        .expect("the unfinished job is queued again");
    assert_eq!(s.queue_jobs(&l).await.expect("jobs").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_schema_is_versioned_and_a_newer_one_refused() {
    let pg = crate::pg::shared();
    let db = pg.create_db().await;
    let url = pg.url(&db);
    drop(
        PgStore::connect(&url)
            .await
            .expect("migrates a fresh database"),
    );
    drop(
        PgStore::connect(&url)
            .await
            .expect("and finds it migrated next time"),
    );
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .batch_execute("UPDATE cdnsign_schema SET version = 999")
        .await
        .expect("bump");
    match PgStore::connect(&url).await {
        Err(StoreError::SchemaTooNew { found: 999, known }) => assert!(known < 999),
        other => panic!("a newer schema was accepted: {other:?}"),
    }
    // An error never shows the URL's password.
    let err = PgStore::connect(&pg.url("no_such_db"))
        .await
        .expect_err("no db");
    assert!(err.to_string().contains("no_such_db"), "{err}");
    assert!(!err.to_string().contains(crate::pg::PASSWORD), "{err}");
}
