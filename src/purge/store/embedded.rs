//! The embedded engine: purges in a redb file under `[purge] data_dir`, for one process.
//!
//! Tables: `purges` (id → JSON record with its jobs), `keys` (client and idempotency key →
//! id), `order` (sequence → id, newest-first listing), `by_target` ((target, sequence) →
//! id), `active` (id → sequence: unfinished purges, what a restart resumes) and `finished`
//! ((finish time, id): what retention deletes). Every write commits with fsync; all of it
//! runs on tokio's blocking threads, never on a worker that also serves calls.
//!
//! One process owns the file (redb locks it), so queue leases, the job index of each queue
//! and the rate buckets live in memory (`super::embedded_mem`): they keep the same contract
//! as the shared engine (a lease expires unless renewed; writes are fenced by it), and the
//! index is rebuilt from `active` at open.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use redb::{Database, ReadableTable};

use super::embedded_mem::Mem;
use super::embedded_tables::{
    ACTIVE, BY_TARGET, FINISHED, KEYS, ORDER, PURGES, decode, key_slot, load, load_w, unavailable,
    write_record,
};
use super::{AdmissionLock, Inserted, Lease, PurgeStore, QueuedJob, StoreError};
use crate::purge::config::ProviderKind;
use crate::purge::model::{JobAction, JobRecord, JobState, PurgeRecord, QueueKey};

struct Inner {
    db: Database,
    mem: Mutex<Mem>,
}

impl Inner {
    fn mem(&self) -> MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Purges in one redb file (see the module docs).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    admissions: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedStore")
    }
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/purges.redb`. Fails when another process holds it.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("purges.redb");
        let db = Database::create(&path).map_err(|e| {
            unavailable(format!(
                "cannot open {} (another cdnsign on the same data_dir? use [purge] database_url to share purges between processes): {e}",
                path.display()
            ))
        })?;
        Self::with_db(db)
    }

    /// A store that lives in memory only (a server with no purge targets, tests).
    pub fn in_memory() -> Result<EmbeddedStore, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(unavailable)?;
        Self::with_db(db)
    }

    fn with_db(db: Database) -> Result<EmbeddedStore, StoreError> {
        let tx = db.begin_write().map_err(unavailable)?;
        {
            tx.open_table(PURGES).map_err(unavailable)?;
            tx.open_table(KEYS).map_err(unavailable)?;
            tx.open_table(ORDER).map_err(unavailable)?;
            tx.open_table(BY_TARGET).map_err(unavailable)?;
            tx.open_table(ACTIVE).map_err(unavailable)?;
            tx.open_table(FINISHED).map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)?;
        let inner = Inner {
            db,
            mem: Mutex::new(Mem::default()),
        };
        // Rebuild the queue index from the unfinished purges.
        {
            let tx = inner.db.begin_read().map_err(unavailable)?;
            let active = tx.open_table(ACTIVE).map_err(unavailable)?;
            let purges = tx.open_table(PURGES).map_err(unavailable)?;
            let mut mem = inner.mem();
            for row in active.iter().map_err(unavailable)? {
                let (id, _) = row.map_err(unavailable)?;
                if let Some(bytes) = purges.get(id.value()).map_err(unavailable)? {
                    mem.index(&decode(bytes.value())?);
                }
            }
        }
        Ok(EmbeddedStore {
            inner: Arc::new(inner),
            admissions: Arc::default(),
        })
    }

    /// Runs blocking store work off the async workers.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| unavailable(format!("store task failed: {e}")))?
    }
}

#[async_trait]
impl PurgeStore for EmbeddedStore {
    fn engine(&self) -> &'static str {
        "embedded"
    }

    async fn insert(&self, mut record: PurgeRecord) -> Result<Inserted, StoreError> {
        self.run(move |inner| {
            let slot = key_slot(&record.client, &record.idempotency_key);
            let tx = inner.db.begin_write().map_err(unavailable)?;
            {
                let held = tx
                    .open_table(KEYS)
                    .map_err(unavailable)?
                    .get(slot.as_str())
                    .map_err(unavailable)?
                    .map(|v| v.value().to_owned());
                if let Some(id) = held
                    && let Some(existing) = load_w(&tx, &id)?
                    && !existing.wholly_failed()
                {
                    return Ok(Inserted::Existing(existing));
                }
                let mut order = tx.open_table(ORDER).map_err(unavailable)?;
                record.seq = order
                    .last()
                    .map_err(unavailable)?
                    .map_or(1, |(k, _)| k.value() + 1);
                order
                    .insert(record.seq, record.id.as_str())
                    .map_err(unavailable)?;
                tx.open_table(BY_TARGET)
                    .map_err(unavailable)?
                    .insert((record.target.as_str(), record.seq), record.id.as_str())
                    .map_err(unavailable)?;
                tx.open_table(KEYS)
                    .map_err(unavailable)?
                    .insert(slot.as_str(), record.id.as_str())
                    .map_err(unavailable)?;
                write_record(&tx, &record, record.created_at_ms)?;
            }
            tx.commit().map_err(unavailable)?;
            inner.mem().index(&record);
            Ok(Inserted::New(record))
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<PurgeRecord>, StoreError> {
        let id = id.to_owned();
        self.run(move |inner| load(&inner.db.begin_read().map_err(unavailable)?, &id))
            .await
    }

    async fn get_by_key(&self, client: &str, key: &str) -> Result<Option<PurgeRecord>, StoreError> {
        let slot = key_slot(client, key);
        self.run(move |inner| {
            let tx = inner.db.begin_read().map_err(unavailable)?;
            let id = tx
                .open_table(KEYS)
                .map_err(unavailable)?
                .get(slot.as_str())
                .map_err(unavailable)?
                .map(|v| v.value().to_owned());
            match id {
                Some(id) => load(&tx, &id),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list(
        &self,
        before: Option<u64>,
        limit: usize,
        target: Option<&str>,
    ) -> Result<Vec<PurgeRecord>, StoreError> {
        let target = target.map(str::to_owned);
        self.run(move |inner| {
            let tx = inner.db.begin_read().map_err(unavailable)?;
            let before = before.unwrap_or(u64::MAX);
            let mut ids = Vec::with_capacity(limit);
            match &target {
                Some(t) => {
                    let table = tx.open_table(BY_TARGET).map_err(unavailable)?;
                    for row in table
                        .range((t.as_str(), 0)..(t.as_str(), before))
                        .map_err(unavailable)?
                        .rev()
                        .take(limit)
                    {
                        ids.push(row.map_err(unavailable)?.1.value().to_owned());
                    }
                }
                None => {
                    let table = tx.open_table(ORDER).map_err(unavailable)?;
                    for row in table
                        .range(..before)
                        .map_err(unavailable)?
                        .rev()
                        .take(limit)
                    {
                        ids.push(row.map_err(unavailable)?.1.value().to_owned());
                    }
                }
            }
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(r) = load(&tx, &id)? {
                    out.push(r);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        among: &[QueueKey],
    ) -> Result<Option<Lease>, StoreError> {
        // Memory only, but under the lock that writes hold across their fsync: off the
        // async workers like everything else here.
        let (owner, among) = (owner.to_owned(), among.to_vec());
        self.run(move |inner| Ok(inner.mem().claim(&owner, now, lease_ms, &among)))
            .await
    }

    async fn claim_queue(
        &self,
        queue: &QueueKey,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let (queue, owner) = (queue.clone(), owner.to_owned());
        self.run(move |inner| Ok(inner.mem().claim_queue(&queue, &owner, now, lease_ms)))
            .await
    }

    async fn renew(&self, lease: &Lease, now: i64, lease_ms: i64) -> Result<Lease, StoreError> {
        let lease = lease.clone();
        self.run(move |inner| inner.mem().renew(lease, now, lease_ms))
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.run(move |inner| {
            inner.mem().release(&lease);
            Ok(())
        })
        .await
    }

    async fn queue_jobs(&self, lease: &Lease) -> Result<Vec<QueuedJob>, StoreError> {
        let lease = lease.clone();
        self.run(move |inner| {
            let entries = inner.mem().queue_entries(&lease)?;
            let tx = inner.db.begin_read().map_err(unavailable)?;
            let mut out = Vec::with_capacity(entries.len());
            let mut cache: Option<PurgeRecord> = None;
            for (_, id, index) in entries {
                if cache.as_ref().is_none_or(|r| r.id != id) {
                    cache = load(&tx, &id)?;
                }
                if let Some(rec) = &cache
                    && let Some(job) = rec.jobs.get(index as usize)
                    && !job.state.is_finished()
                {
                    out.push(QueuedJob {
                        purge_id: id.clone(),
                        index,
                        target: rec.target.clone(),
                        job: job.clone(),
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn update_job(
        &self,
        lease: &Lease,
        now: i64,
        purge_id: &str,
        index: u32,
        job: &JobRecord,
    ) -> Result<(), StoreError> {
        let (lease, id, job) = (lease.clone(), purge_id.to_owned(), job.clone());
        self.run(move |inner| {
            // The lease is checked and the write made under one lock: no takeover between.
            let mut mem = inner.mem();
            mem.fence(&lease)?;
            let tx = inner.db.begin_write().map_err(unavailable)?;
            let mut rec =
                load_w(&tx, &id)?.ok_or_else(|| StoreError::Corrupt(format!("no purge {id}")))?;
            let slot = rec
                .jobs
                .get_mut(index as usize)
                .ok_or_else(|| StoreError::Corrupt(format!("purge {id} has no job {index}")))?;
            if *slot == job {
                return Ok(());
            }
            *slot = job;
            write_record(&tx, &rec, now)?;
            tx.commit().map_err(unavailable)?;
            mem.index(&rec);
            Ok(())
        })
        .await
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
        let (lease, id, part, rest) = (
            lease.clone(),
            purge_id.to_owned(),
            part.clone(),
            rest.clone(),
        );
        self.run(move |inner| {
            let mut mem = inner.mem();
            mem.fence(&lease)?;
            let tx = inner.db.begin_write().map_err(unavailable)?;
            let mut rec =
                load_w(&tx, &id)?.ok_or_else(|| StoreError::Corrupt(format!("no purge {id}")))?;
            let slot = rec
                .jobs
                .get_mut(index as usize)
                .ok_or_else(|| StoreError::Corrupt(format!("purge {id} has no job {index}")))?;
            *slot = rest;
            rec.jobs.push(part);
            let new_index = (rec.jobs.len() - 1) as u32;
            write_record(&tx, &rec, now)?;
            tx.commit().map_err(unavailable)?;
            mem.index(&rec);
            Ok(new_index)
        })
        .await
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
        let key = (client.to_owned(), bucket.to_owned());
        self.run(move |inner| Ok(inner.mem().take_tokens(key, n, rate, burst, now)))
            .await
    }

    async fn delete_finished_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        self.run(move |inner| {
            let tx = inner.db.begin_write().map_err(unavailable)?;
            let mut deleted = Vec::new();
            {
                let finished = tx.open_table(FINISHED).map_err(unavailable)?;
                for row in finished
                    .range((i64::MIN, "")..(cutoff, ""))
                    .map_err(unavailable)?
                {
                    let (k, _) = row.map_err(unavailable)?;
                    let (at, id) = k.value();
                    deleted.push((at, id.to_owned()));
                }
            }
            let mut removed = Vec::new();
            for (at, id) in &deleted {
                tx.open_table(FINISHED)
                    .map_err(unavailable)?
                    .remove((*at, id.as_str()))
                    .map_err(unavailable)?;
                let Some(rec) = load_w(&tx, id)? else {
                    continue;
                };
                tx.open_table(PURGES)
                    .map_err(unavailable)?
                    .remove(id.as_str())
                    .map_err(unavailable)?;
                tx.open_table(ORDER)
                    .map_err(unavailable)?
                    .remove(rec.seq)
                    .map_err(unavailable)?;
                tx.open_table(BY_TARGET)
                    .map_err(unavailable)?
                    .remove((rec.target.as_str(), rec.seq))
                    .map_err(unavailable)?;
                let slot = key_slot(&rec.client, &rec.idempotency_key);
                let mut keys = tx.open_table(KEYS).map_err(unavailable)?;
                let points_here = keys
                    .get(slot.as_str())
                    .map_err(unavailable)?
                    .is_some_and(|v| v.value() == id);
                if points_here {
                    keys.remove(slot.as_str()).map_err(unavailable)?;
                }
                removed.push(rec);
            }
            tx.commit().map_err(unavailable)?;
            let mut mem = inner.mem();
            for rec in &removed {
                mem.unindex(rec);
            }
            Ok(removed.len() as u64)
        })
        .await
    }

    async fn lock_admission(&self, key: &str) -> Result<Box<dyn AdmissionLock>, StoreError> {
        let lock = Arc::clone(
            self.admissions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key.to_owned())
                .or_default(),
        );
        Ok(Box::new(lock.lock_owned().await))
    }

    async fn unsent_paths(
        &self,
        provider: ProviderKind,
        action: JobAction,
        due_before_ms: i64,
    ) -> Result<u64, StoreError> {
        self.run(move |inner| {
            let ids = inner.mem().unfinished_purges(provider);
            let tx = inner.db.begin_read().map_err(unavailable)?;
            let mut total = 0u64;
            for id in ids {
                if let Some(rec) = load(&tx, &id)? {
                    total += rec
                        .jobs
                        .iter()
                        .filter(|j| {
                            j.provider == provider
                                && j.action == action
                                && matches!(j.state, JobState::Waiting | JobState::Sending)
                                && j.not_before_ms < due_before_ms
                        })
                        .map(|j| j.paths.len() as u64)
                        .sum::<u64>();
                }
            }
            Ok(total)
        })
        .await
    }
}
