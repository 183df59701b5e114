//! A purge's rows in PostgreSQL: reading a purge with its jobs, inserting one under its
//! idempotency key, and marking it finished. Used by `super::postgres`.

use serde_json::Value;
use tokio_postgres::{GenericClient, Transaction};

use super::pg_pool::{Pool, db_error};
use super::{Inserted, StoreError};
use crate::purge::config::ProviderKind;
use crate::purge::model::PurgeRecord;

/// A stored row that does not read back as what was written.
fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// A `provider` column (`purge_queues`, `purge_jobs`) read back.
pub(super) fn provider_from(s: &str) -> Result<ProviderKind, StoreError> {
    match s {
        "cloudfront" => Ok(ProviderKind::Cloudfront),
        "aliyun" => Ok(ProviderKind::Aliyun),
        other => Err(corrupt(format!("unknown provider {other:?}"))),
    }
}

/// A record or job as the JSONB column holds it.
pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, StoreError> {
    serde_json::to_value(v).map_err(corrupt)
}

/// A JSONB column read back as a record or job.
pub(super) fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, StoreError> {
    serde_json::from_value(v).map_err(|e| corrupt(format!("stored record: {e}")))
}

/// Loads purges by id with their jobs, in the order of `ids`.
pub(super) async fn load<C: GenericClient + Sync>(
    client: &C,
    ids: &[String],
) -> Result<Vec<PurgeRecord>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let heads = client
        .query(
            "SELECT id, seq, header FROM purges WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(db_error)?;
    let jobs = client
        .query(
            "SELECT purge_id, job FROM purge_jobs WHERE purge_id = ANY($1) ORDER BY purge_id, idx",
            &[&ids],
        )
        .await
        .map_err(db_error)?;
    let mut by_id = std::collections::HashMap::new();
    for row in heads {
        let id: String = row.get(0);
        let seq: i64 = row.get(1);
        let mut rec: PurgeRecord = from_json(row.get(2))?;
        rec.seq = seq as u64;
        rec.jobs.clear();
        by_id.insert(id, rec);
    }
    for row in jobs {
        let id: String = row.get(0);
        if let Some(rec) = by_id.get_mut(&id) {
            rec.jobs.push(from_json(row.get(1))?);
        }
    }
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// Holds the purge's row for the rest of the transaction (after the queue's fence: every
/// writer takes the queue row, then the purge row). Writers of one purge's jobs in
/// different queues then commit one after the other, each seeing the other's jobs.
pub(super) async fn lock_purge(tx: &Transaction<'_>, purge_id: &str) -> Result<(), StoreError> {
    tx.query_opt(
        "SELECT 1 FROM purges WHERE id = $1 FOR UPDATE",
        &[&purge_id],
    )
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Marks the purge finished once none of its jobs is left to run.
pub(super) async fn mark_finished(
    tx: &Transaction<'_>,
    purge_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE purges SET finished_at_ms = $2 WHERE id = $1 AND finished_at_ms IS NULL \
         AND NOT EXISTS (SELECT 1 FROM purge_jobs WHERE purge_id = $1 \
                         AND state NOT IN ('completed', 'failed'))",
        &[&purge_id, &now],
    )
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Inserts `record` with its jobs and queues, or finds the purge its idempotency key
/// already names (unless that one wholly failed: then the key moves to the new one).
/// `None`: another replica took the key meanwhile; try again.
pub(super) async fn insert_once(
    pool: &Pool,
    record: &mut PurgeRecord,
) -> Result<Option<Inserted>, StoreError> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await.map_err(db_error)?;
    let held = tx
        .query_opt(
            "SELECT purge_id FROM purge_keys WHERE client = $1 AND idempotency_key = $2 FOR UPDATE",
            &[&record.client, &record.idempotency_key],
        )
        .await
        .map_err(db_error)?
        .map(|r| r.get::<_, String>(0));
    if let Some(id) = &held {
        let existing = load(&tx, std::slice::from_ref(id)).await?;
        if let Some(existing) = existing.into_iter().next()
            && !existing.wholly_failed()
        {
            return Ok(Some(Inserted::Existing(existing)));
        }
    }
    let mut header = record.clone();
    header.jobs.clear();
    let seq: i64 = tx
        .query_one(
            "INSERT INTO purges (id, client, idempotency_key, target, created_at_ms, header) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
            &[
                &record.id,
                &record.client,
                &record.idempotency_key,
                &record.target,
                &record.created_at_ms,
                &to_json(&header)?,
            ],
        )
        .await
        .map_err(db_error)?
        .get(0);
    record.seq = seq as u64;
    for (i, job) in record.jobs.iter().enumerate() {
        tx.execute(
            "INSERT INTO purge_jobs (purge_id, idx, purge_seq, provider, resource, state, job) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &record.id,
                &(i as i32),
                &seq,
                &job.provider.as_str(),
                &job.resource,
                &job.state.as_str(),
                &to_json(job)?,
            ],
        )
        .await
        .map_err(db_error)?;
        tx.execute(
            "INSERT INTO purge_queues (provider, resource) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&job.provider.as_str(), &job.resource],
        )
        .await
        .map_err(db_error)?;
    }
    if held.is_some() {
        tx.execute(
            "UPDATE purge_keys SET purge_id = $3 WHERE client = $1 AND idempotency_key = $2",
            &[&record.client, &record.idempotency_key, &record.id],
        )
        .await
        .map_err(db_error)?;
    } else {
        let took = tx
            .execute(
                "INSERT INTO purge_keys (client, idempotency_key, purge_id) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&record.client, &record.idempotency_key, &record.id],
            )
            .await
            .map_err(db_error)?;
        if took == 0 {
            // Another replica took the key meanwhile: look again.
            tx.rollback().await.map_err(db_error)?;
            return Ok(None);
        }
    }
    if record.is_finished() {
        mark_finished(&tx, &record.id, record.created_at_ms).await?;
    }
    tx.commit().await.map_err(db_error)?;
    Ok(Some(Inserted::New(record.clone())))
}
