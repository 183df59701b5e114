//! The shared engine: PostgreSQL, for any number of replicas.
//!
//! `[purge] database_url = "postgres://user@host:5432/db"`; the password comes from the URL
//! or the standard `PGPASSWORD` (and `PGUSER`, `PGHOST`, `PGPORT`, `PGDATABASE` fill what
//! the URL leaves out). The URL and password are never logged, never in an error or a
//! metric: messages name `user@host:port/db` only.
//!
//! The schema is versioned and migrated at start (`super::pg_schema`); a server refuses a
//! database whose schema is newer than it knows. Connections are made, and do all their socket I/O, on a runtime of the
//! store's own, so no tokio worker that serves calls ever waits on the database's
//! network. Queue leases use `FOR UPDATE SKIP LOCKED` to claim and a row lock on the
//! queue to fence every job write; they, and the shared rate buckets, are timed by the
//! database's clock (`super::pg_clock`), so a replica whose clock is off cannot take a
//! lease another still holds.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_postgres::Transaction;

use super::pg_clock::{DbClock, LocalClock};
use super::pg_pool::{Pool, db_error};
use super::pg_records::{
    from_json, insert_once, load, lock_purge, mark_finished, provider_from, to_json,
};
use super::pg_schema::migrate;
use super::pg_url::{connection_config, describe};

pub use super::pg_schema::SCHEMA_VERSION;
use super::{AdmissionLock, Inserted, Lease, PurgeStore, QueuedJob, StoreError, bucket_take};
use crate::purge::config::ProviderKind;
use crate::purge::model::{JobAction, JobRecord, PurgeRecord, QueueKey};

/// Purges in PostgreSQL (see the module docs).
#[derive(Clone)]
pub struct PgStore {
    pool: Arc<Pool>,
    name: String,
    clock: Arc<DbClock>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.name)
            .finish()
    }
}

impl PgStore {
    /// Connects, checks the schema version and migrates it. Fails on a newer schema.
    pub async fn connect(database_url: &str) -> Result<PgStore, StoreError> {
        Self::connect_with_clock(database_url, Arc::new(crate::purge::model::now_ms)).await
    }

    /// [`connect`](Self::connect), reading this host's time from `local` when measuring
    /// its clock against the database's (tests play a host whose clock is off).
    pub async fn connect_with_clock(
        database_url: &str,
        local: LocalClock,
    ) -> Result<PgStore, StoreError> {
        let cfg = connection_config(database_url).map_err(StoreError::Unavailable)?;
        let name = describe(&cfg);
        let store = PgStore {
            pool: Arc::new(Pool::new(cfg)?),
            name,
            clock: Arc::new(DbClock::new(local)),
        };
        migrate(&store.pool).await.map_err(|e| match e {
            StoreError::Unavailable(m) => StoreError::Unavailable(format!("{} ({m})", store.name)),
            other => other,
        })?;
        store.clock.measure(&store.pool, &store.name, true).await;
        Ok(store)
    }

    /// `now`, a time on the caller's clock, on the database's (measured again when stale).
    async fn db_now(&self, now: i64) -> i64 {
        self.clock.refresh(&self.pool, &self.name).await;
        self.clock.to_db(now)
    }

    /// `user@host:port/db`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Holds the queue's row for the rest of the transaction if `lease` still owns it
    /// (a claim by another replica waits until this write commits).
    async fn fence(tx: &Transaction<'_>, lease: &Lease) -> Result<(), StoreError> {
        let held = tx
            .query_opt(
                "SELECT 1 FROM purge_queues WHERE provider = $1 AND resource = $2 \
                 AND lease_owner = $3 AND lease_epoch = $4 FOR SHARE",
                &[
                    &lease.queue.provider.as_str(),
                    &lease.queue.resource,
                    &lease.owner,
                    &lease.epoch,
                ],
            )
            .await
            .map_err(db_error)?;
        held.map(|_| ())
            .ok_or_else(|| StoreError::LeaseLost(lease.queue.clone()))
    }
}

#[async_trait]
impl PurgeStore for PgStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    async fn insert(&self, mut record: PurgeRecord) -> Result<Inserted, StoreError> {
        for _ in 0..3 {
            if let Some(done) = insert_once(&self.pool, &mut record).await? {
                return Ok(done);
            }
        }
        Err(StoreError::Unavailable(
            "idempotency key contended; retry".into(),
        ))
    }

    async fn get(&self, id: &str) -> Result<Option<PurgeRecord>, StoreError> {
        let c = self.pool.get().await?;
        Ok(load(&*c, &[id.to_owned()]).await?.into_iter().next())
    }

    async fn get_by_key(&self, client: &str, key: &str) -> Result<Option<PurgeRecord>, StoreError> {
        let c = self.pool.get().await?;
        let id = c
            .query_opt(
                "SELECT purge_id FROM purge_keys WHERE client = $1 AND idempotency_key = $2",
                &[&client, &key],
            )
            .await
            .map_err(db_error)?
            .map(|r| r.get::<_, String>(0));
        match id {
            Some(id) => Ok(load(&*c, &[id]).await?.into_iter().next()),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        before: Option<u64>,
        limit: usize,
        target: Option<&str>,
    ) -> Result<Vec<PurgeRecord>, StoreError> {
        let c = self.pool.get().await?;
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match target {
            Some(t) => c
                .query(
                    "SELECT id FROM purges WHERE target = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
                    &[&t, &before, &limit],
                )
                .await,
            None => c
                .query(
                    "SELECT id FROM purges WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                    &[&before, &limit],
                )
                .await,
        }
        .map_err(db_error)?;
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        load(&*c, &ids).await
    }

    async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        among: &[QueueKey],
    ) -> Result<Option<Lease>, StoreError> {
        let now = self.db_now(now).await;
        let c = self.pool.get().await?;
        let among: Vec<String> = among
            .iter()
            .map(|q| format!("{}/{}", q.provider.as_str(), q.resource))
            .collect();
        let row = c
            .query_opt(
                "WITH c AS ( \
                   SELECT q.provider, q.resource FROM purge_queues q \
                   WHERE q.lease_until_ms < $2 \
                     AND q.provider || '/' || q.resource = ANY($4) \
                     AND EXISTS (SELECT 1 FROM purge_jobs j WHERE j.provider = q.provider \
                                 AND j.resource = q.resource \
                                 AND j.state NOT IN ('completed', 'failed')) \
                   ORDER BY q.lease_until_ms, q.provider, q.resource \
                   LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 UPDATE purge_queues q SET lease_owner = $1, lease_until_ms = $2 + $3, \
                   lease_epoch = q.lease_epoch + 1 \
                 FROM c WHERE q.provider = c.provider AND q.resource = c.resource \
                 RETURNING q.provider, q.resource, q.lease_epoch, q.lease_until_ms",
                &[&owner, &now, &lease_ms, &among],
            )
            .await
            .map_err(db_error)?;
        row.map(|r| {
            Ok(Lease {
                queue: QueueKey {
                    provider: provider_from(r.get(0))?,
                    resource: r.get(1),
                },
                owner: owner.to_owned(),
                epoch: r.get(2),
                until_ms: self.clock.to_local(r.get(3)),
            })
        })
        .transpose()
    }

    async fn claim_queue(
        &self,
        queue: &QueueKey,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let now = self.db_now(now).await;
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "UPDATE purge_queues SET lease_owner = $3, lease_until_ms = $4 + $5, \
                   lease_epoch = lease_epoch + 1 \
                 WHERE provider = $1 AND resource = $2 AND lease_until_ms < $4 \
                   AND EXISTS (SELECT 1 FROM purge_jobs j WHERE j.provider = $1 AND j.resource = $2 \
                               AND j.state NOT IN ('completed', 'failed')) \
                 RETURNING lease_epoch, lease_until_ms",
                &[
                    &queue.provider.as_str(),
                    &queue.resource,
                    &owner,
                    &now,
                    &lease_ms,
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(row.map(|r| Lease {
            queue: queue.clone(),
            owner: owner.to_owned(),
            epoch: r.get(0),
            until_ms: self.clock.to_local(r.get(1)),
        }))
    }

    async fn renew(&self, lease: &Lease, now: i64, lease_ms: i64) -> Result<Lease, StoreError> {
        let now = self.db_now(now).await;
        let c = self.pool.get().await?;
        let until_ms = now.saturating_add(lease_ms);
        let n = c
            .execute(
                "UPDATE purge_queues SET lease_until_ms = $5 WHERE provider = $1 AND resource = $2 \
                 AND lease_owner = $3 AND lease_epoch = $4",
                &[
                    &lease.queue.provider.as_str(),
                    &lease.queue.resource,
                    &lease.owner,
                    &lease.epoch,
                    &until_ms,
                ],
            )
            .await
            .map_err(db_error)?;
        if n == 0 {
            return Err(StoreError::LeaseLost(lease.queue.clone()));
        }
        Ok(Lease {
            until_ms: self.clock.to_local(until_ms),
            ..lease.clone()
        })
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute(
            "UPDATE purge_queues SET lease_until_ms = 0 WHERE provider = $1 AND resource = $2 \
             AND lease_owner = $3 AND lease_epoch = $4",
            &[
                &lease.queue.provider.as_str(),
                &lease.queue.resource,
                &lease.owner,
                &lease.epoch,
            ],
        )
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn queue_jobs(&self, lease: &Lease) -> Result<Vec<QueuedJob>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT j.purge_id, j.idx, p.target, j.job FROM purge_jobs j \
                 JOIN purges p ON p.id = j.purge_id \
                 WHERE j.provider = $1 AND j.resource = $2 AND j.state NOT IN ('completed', 'failed') \
                 ORDER BY j.purge_seq, j.idx",
                &[&lease.queue.provider.as_str(), &lease.queue.resource],
            )
            .await
            .map_err(db_error)?;
        rows.into_iter()
            .map(|r| {
                Ok(QueuedJob {
                    purge_id: r.get(0),
                    index: r.get::<_, i32>(1) as u32,
                    target: r.get(2),
                    job: from_json(r.get(3))?,
                })
            })
            .collect()
    }

    async fn update_job(
        &self,
        lease: &Lease,
        now: i64,
        purge_id: &str,
        index: u32,
        job: &JobRecord,
    ) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(db_error)?;
        Self::fence(&tx, lease).await?;
        if job.state.is_finished() {
            // Two queues finishing the last two jobs of one purge at once must not both
            // see the other's job unfinished (then neither marks the purge finished).
            lock_purge(&tx, purge_id).await?;
        }
        let json = to_json(job)?;
        let changed = tx
            .execute(
                "UPDATE purge_jobs SET state = $3, job = $4 WHERE purge_id = $1 AND idx = $2 \
                 AND job IS DISTINCT FROM $4",
                &[&purge_id, &(index as i32), &job.state.as_str(), &json],
            )
            .await
            .map_err(db_error)?;
        if changed > 0 && job.state.is_finished() {
            mark_finished(&tx, purge_id, now).await?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn split_job(
        &self,
        lease: &Lease,
        now: i64,
        purge_id: &str,
        index: u32,
        part: &JobRecord,
        rest: &JobRecord,
    ) -> Result<u32, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(db_error)?;
        Self::fence(&tx, lease).await?;
        // One split of this purge at a time: the new job's index is max(idx) + 1.
        lock_purge(&tx, purge_id).await?;
        tx.execute(
            "UPDATE purge_jobs SET state = $3, job = $4 WHERE purge_id = $1 AND idx = $2",
            &[
                &purge_id,
                &(index as i32),
                &rest.state.as_str(),
                &to_json(rest)?,
            ],
        )
        .await
        .map_err(db_error)?;
        let row = tx
            .query_one(
                "INSERT INTO purge_jobs (purge_id, idx, purge_seq, provider, resource, state, job) \
                 SELECT $1::text, max(idx) + 1, max(purge_seq), $2::text, $3::text, $4::text, $5::jsonb \
                 FROM purge_jobs WHERE purge_id = $1::text RETURNING idx",
                &[
                    &purge_id,
                    &part.provider.as_str(),
                    &part.resource,
                    &part.state.as_str(),
                    &to_json(part)?,
                ],
            )
            .await
            .map_err(db_error)?;
        if part.state.is_finished() && rest.state.is_finished() {
            mark_finished(&tx, purge_id, now).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(row.get::<_, i32>(0) as u32)
    }

    async fn take_tokens(
        &self,
        client: &str,
        bucket: &str,
        n: f64,
        rate: f64,
        burst: f64,
        now: i64,
    ) -> Result<Result<(), f64>, StoreError> {
        let now = self.db_now(now).await;
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(db_error)?;
        tx.execute(
            "INSERT INTO purge_rate (client, bucket, tokens, updated_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
            &[&client, &bucket, &burst, &now],
        )
        .await
        .map_err(db_error)?;
        let row = tx
            .query_one(
                "SELECT tokens, updated_ms FROM purge_rate WHERE client = $1 AND bucket = $2 FOR UPDATE",
                &[&client, &bucket],
            )
            .await
            .map_err(db_error)?;
        let state = (row.get::<_, f64>(0), row.get::<_, i64>(1));
        match bucket_take(Some(state), n, rate, burst, now) {
            Ok((tokens, at)) => {
                tx.execute(
                    "UPDATE purge_rate SET tokens = $3, updated_ms = $4 WHERE client = $1 AND bucket = $2",
                    &[&client, &bucket, &tokens, &at],
                )
                .await
                .map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
                Ok(Ok(()))
            }
            Err(wait) => {
                tx.rollback().await.map_err(db_error)?;
                Ok(Err(wait))
            }
        }
    }

    async fn delete_finished_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        let c = self.pool.get().await?;
        c.execute(
            "DELETE FROM purges WHERE finished_at_ms IS NOT NULL AND finished_at_ms < $1",
            &[&cutoff],
        )
        .await
        .map_err(db_error)
    }

    async fn lock_admission(&self, key: &str) -> Result<Box<dyn AdmissionLock>, StoreError> {
        // A session lock on a connection of its own: released when the guard (the
        // connection) is dropped, whatever happens in between.
        let client = self.pool.dedicated().await?;
        client
            .execute("SELECT pg_advisory_lock(hashtext($1))", &[&key])
            .await
            .map_err(db_error)?;
        Ok(Box::new(client))
    }

    async fn unsent_paths(
        &self,
        provider: ProviderKind,
        action: JobAction,
        due_before_ms: i64,
    ) -> Result<u64, StoreError> {
        let c = self.pool.get().await?;
        let action = to_json(&action)?;
        let row = c
            .query_one(
                "SELECT COALESCE(SUM(jsonb_array_length(job->'paths')), 0)::bigint FROM purge_jobs \
                 WHERE provider = $1 AND state IN ('waiting', 'sending') AND job->'action' = $2 \
                 AND COALESCE((job->>'not_before_ms')::bigint, 0) < $3",
                &[&provider.as_str(), &action, &due_before_ms],
            )
            .await
            .map_err(db_error)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }
}
