//! PostgreSQL, two replicas writing jobs of one purge at the same moment from different
//! queues: the one that finishes the purge's last job sees the other's, so the purge is
//! marked finished (and retention can delete it). The other replica's transaction is
//! played on a raw connection, held open while the store's write runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::purge_store::{LEASE, job, new_id, purge, queue};
use cdnsign::purge::model::{JobState, now_ms};
use cdnsign::purge::store::PurgeStore;
use cdnsign::purge::store::postgres::PgStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_two_jobs_finishing_at_once_on_two_queues_finish_the_purge() {
    let pg = crate::pg::shared();
    let url = pg.url(&pg.create_db().await);
    let store = Arc::new(PgStore::connect(&url).await.expect("connect"));
    let record = new_id(
        store
            .insert(purge(
                "race_1",
                "c",
                "k1",
                "site",
                vec![job("R1", &["/a"]), job("R2", &["/b"])],
            ))
            .await
            .expect("insert"),
    );
    let t = now_ms();
    let lease = store
        .claim("replica-1", t, LEASE, &[queue("R1")])
        .await
        .expect("claim")
        .expect("R1");
    let jobs = store.queue_jobs(&lease).await.expect("jobs");
    assert_eq!(jobs.len(), 1);

    // Replica 2 (raw SQL, as the store writes a finishing job): holds the purge's row,
    // completes R2's job, finds R1's unfinished, and has not committed yet.
    let (mut raw, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let other = raw.transaction().await.expect("begin");
    other
        .execute(
            "SELECT 1 FROM purges WHERE id = $1 FOR UPDATE",
            &[&record.id],
        )
        .await
        .expect("lock");
    other
        .execute(
            "UPDATE purge_jobs SET state = 'completed' WHERE purge_id = $1 AND resource = 'R2'",
            &[&record.id],
        )
        .await
        .expect("complete R2");
    other
        .execute(
            "UPDATE purges SET finished_at_ms = $2 WHERE id = $1 AND finished_at_ms IS NULL \
             AND NOT EXISTS (SELECT 1 FROM purge_jobs WHERE purge_id = $1 \
                             AND state NOT IN ('completed', 'failed'))",
            &[&record.id, &t],
        )
        .await
        .expect("mark finished (R1 still unfinished: no row)");

    // Replica 1 completes R1's job meanwhile.
    let mut done = jobs[0].job.clone();
    done.state = JobState::Completed;
    let write = tokio::spawn({
        let store = Arc::clone(&store);
        let (lease, purge_id, index) = (lease.clone(), jobs[0].purge_id.clone(), jobs[0].index);
        async move { store.update_job(&lease, t, &purge_id, index, &done).await }
    });
    // Until the write has either finished or is waiting for replica 2's row lock (bounded;
    // each check is one query).
    let (watcher, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let started = Instant::now();
    for _ in 0..100_000 {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND datname = current_database()",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if write.is_finished() || waiting > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "neither ran nor waited"
        );
    }
    other.commit().await.expect("commit");
    write.await.expect("task").expect("update_job");

    let finished: bool = raw
        .query_one(
            "SELECT finished_at_ms IS NOT NULL FROM purges WHERE id = $1",
            &[&record.id],
        )
        .await
        .expect("purge")
        .get(0);
    assert!(
        finished,
        "both jobs completed, the purge never marked finished"
    );
    assert_eq!(
        store
            .delete_finished_before(i64::MAX)
            .await
            .expect("retention"),
        1
    );
}
