//! Where purges live: one trait ([`PurgeStore`]), two engines.
//!
//! - [`embedded::EmbeddedStore`]: a redb file in `[purge] data_dir`, for one process (the
//!   zero-setup default). Every write commits with fsync, on tokio's blocking threads.
//! - [`postgres::PgStore`]: PostgreSQL at `[purge] database_url`, shared by any number of
//!   replicas. Its connections do their socket I/O on a runtime of their own.
//!
//! The contract both keep (tests run the same suite on each):
//! - `insert` stores a purge and its jobs atomically with its idempotency key, scoped to
//!   the client; a key held by a purge that wholly failed is free again;
//! - jobs of one provider resource form a queue; a replica works a queue only while it holds
//!   the queue's lease ([`PurgeStore::claim`], [`PurgeStore::renew`]); a lease not renewed
//!   expires and another replica may claim it; every job write is fenced by the lease (a
//!   worker whose lease was taken over gets [`StoreError::LeaseLost`] and writes nothing);
//! - a job is written only when it changed; a purge records when it finished, and
//!   [`PurgeStore::delete_finished_before`] removes it with its key after the retention;
//! - listing is newest first by an index, never a scan of every purge;
//! - rate-limit buckets for purge paths live here so every replica shares them.

pub mod embedded;
mod embedded_mem;
mod embedded_tables;
mod pg_clock;
pub use pg_clock::LocalClock;
mod pg_pool;
mod pg_records;
mod pg_schema;
pub mod pg_url;
pub mod postgres;

use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::purge::config::ProviderKind;
use crate::purge::model::{JobAction, JobRecord, PurgeRecord, QueueKey};

/// The store failed: I/O, a database that is down or restarting, corruption. Never carries
/// request data or secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The engine could not do it now (database down, disk full): purge calls answer
    /// UNAVAILABLE and the scheduler retries later.
    #[error("purge store unavailable: {0}")]
    Unavailable(String),
    /// Stored data is not what this version understands.
    #[error("purge store: {0}")]
    Corrupt(String),
    /// The worker's lease on a queue was taken over (or released): nothing was written.
    #[error("lease on the {0} queue is no longer held by this worker")]
    LeaseLost(QueueKey),
    /// The database's schema is newer than this build knows.
    #[error(
        "the purge database's schema is version {found}, newer than this cdnsign knows ({known}); upgrade cdnsign or point it at another database"
    )]
    SchemaTooNew {
        /// In the database.
        found: i32,
        /// What this build migrates to.
        known: i32,
    },
}

/// Outcome of [`PurgeStore::insert`].
#[derive(Debug)]
pub enum Inserted {
    /// Stored (with its sequence number set).
    New(PurgeRecord),
    /// The client's idempotency key is held by this purge; nothing was stored.
    Existing(PurgeRecord),
}

/// A replica's hold on one queue. Writes name the lease; the store refuses them once the
/// lease has been taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The queue.
    pub queue: QueueKey,
    /// Who holds it (a replica's id).
    pub owner: String,
    /// Raised at every claim: a fencing token.
    pub epoch: i64,
    /// Expires then (unix ms) unless renewed.
    pub until_ms: i64,
}

/// A job as its queue sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    /// Its purge.
    pub purge_id: String,
    /// Its place in the purge's jobs.
    pub index: u32,
    /// The purge's target name.
    pub target: String,
    /// The job.
    pub job: JobRecord,
}

/// Durable purge records, shared by every replica of a deployment (see the module docs
/// for the contract). Times are unix milliseconds given by the caller, so tests drive the
/// clock.
#[async_trait]
pub trait PurgeStore: Send + Sync + std::fmt::Debug {
    /// Which engine, for logs: `embedded` or `postgres`.
    fn engine(&self) -> &'static str;

    /// Stores a new purge and its jobs unless the client's idempotency key is held by a
    /// purge that has not wholly failed. A purge without a key is stored under its id.
    async fn insert(&self, record: PurgeRecord) -> Result<Inserted, StoreError>;

    /// One purge with its jobs.
    async fn get(&self, id: &str) -> Result<Option<PurgeRecord>, StoreError>;

    /// The purge holding a client's idempotency key.
    async fn get_by_key(&self, client: &str, key: &str) -> Result<Option<PurgeRecord>, StoreError>;

    /// Newest first: up to `limit` purges with a sequence below `before`, of `target` when
    /// given.
    async fn list(
        &self,
        before: Option<u64>,
        limit: usize,
        target: Option<&str>,
    ) -> Result<Vec<PurgeRecord>, StoreError>;

    /// Claims one of `among` (the queues this replica serves and does not hold yet) that
    /// has unfinished jobs and whose lease is free or expired at `now`; `None` when there
    /// is none. A queue not in `among` is never claimed: a replica whose config lacks a
    /// target leaves its queue to one that has it.
    async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        among: &[QueueKey],
    ) -> Result<Option<Lease>, StoreError>;

    /// Claims `queue` if it has unfinished jobs and its lease is free or expired at `now`.
    async fn claim_queue(
        &self,
        queue: &QueueKey,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<Lease>, StoreError>;

    /// Extends a lease this owner still holds; [`StoreError::LeaseLost`] when it does not.
    async fn renew(&self, lease: &Lease, now: i64, lease_ms: i64) -> Result<Lease, StoreError>;

    /// Gives a lease up (its queue can be claimed at once).
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;

    /// The queue's unfinished jobs, oldest purge first, each purge's jobs in order.
    async fn queue_jobs(&self, lease: &Lease) -> Result<Vec<QueuedJob>, StoreError>;

    /// Writes one job, fenced by `lease`; marks its purge finished at `now` when this was
    /// its last unfinished job.
    async fn update_job(
        &self,
        lease: &Lease,
        now: i64,
        purge_id: &str,
        index: u32,
        job: &JobRecord,
    ) -> Result<(), StoreError>;

    /// Splits a waiting job in two, fenced by `lease`: `rest` stays in its place and
    /// `part` becomes a new job of the purge (returned: its index). Used to send what fits
    /// now when a whole job does not.
    async fn split_job(
        &self,
        lease: &Lease,
        now: i64,
        purge_id: &str,
        index: u32,
        part: &JobRecord,
        rest: &JobRecord,
    ) -> Result<u32, StoreError>;

    /// Takes `n` tokens from a client's bucket refilling at `rate` per second up to
    /// `burst`; `Ok(Err(seconds))` says when enough would be there.
    async fn take_tokens(
        &self,
        client: &str,
        bucket: &str,
        n: f64,
        rate: f64,
        burst: f64,
        now: i64,
    ) -> Result<Result<(), f64>, StoreError>;

    /// Deletes purges finished before `cutoff` (with their jobs and keys); how many.
    async fn delete_finished_before(&self, cutoff: i64) -> Result<u64, StoreError>;

    /// Admits purges under `key` one at a time, across every replica of the store, until
    /// the returned guard is dropped (a quota check and the insert it allows happen under
    /// it, so two purges cannot both pass one check).
    async fn lock_admission(&self, key: &str) -> Result<Box<dyn AdmissionLock>, StoreError>;

    /// Paths of `provider`'s jobs of `action` accepted but not sent yet (waiting or being
    /// sent) that may go before `due_before_ms` (their `not_before_ms` is earlier): what they
    /// reserve of the provider's quota for the day that ends then. Jobs already put off to
    /// a later day (past a quota reset) reserve that day's quota, not this one's.
    async fn unsent_paths(
        &self,
        provider: ProviderKind,
        action: JobAction,
        due_before_ms: i64,
    ) -> Result<u64, StoreError>;
}

/// Held while a purge is admitted; dropping it lets the next one in.
pub trait AdmissionLock: Send {}

impl<T: Send> AdmissionLock for T {}

/// The store once it has opened. A database that is down at start, or a data file another
/// process holds, leaves the slot empty (purge calls answer UNAVAILABLE, signing serves) and
/// a background task fills it when it can.
#[derive(Default)]
pub struct StoreSlot {
    cell: OnceLock<Arc<dyn PurgeStore>>,
    reason: Mutex<String>,
    filled: Notify,
}

impl std::fmt::Debug for StoreSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSlot")
            .field("open", &self.cell.get().is_some())
            .finish()
    }
}

impl StoreSlot {
    /// A slot holding `store`.
    pub fn open(store: Arc<dyn PurgeStore>) -> StoreSlot {
        let slot = StoreSlot::default();
        slot.fill(store);
        slot
    }

    /// An empty slot, and why.
    pub fn empty(reason: String) -> StoreSlot {
        let slot = StoreSlot::default();
        slot.set_reason(reason);
        slot
    }

    /// Says why the slot is still empty (for the UNAVAILABLE message).
    pub fn set_reason(&self, reason: String) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// Fills the slot (once).
    pub fn fill(&self, store: Arc<dyn PurgeStore>) {
        if self.cell.set(store).is_ok() {
            self.filled.notify_waiters();
        }
    }

    /// The store, or why there is none yet.
    pub fn get(&self) -> Result<Arc<dyn PurgeStore>, StoreError> {
        self.cell.get().cloned().ok_or_else(|| {
            StoreError::Unavailable(
                self.reason
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            )
        })
    }

    /// Resolves when an empty slot is filled; never, when it is full already.
    pub async fn ready(&self) {
        let filled = self.filled.notified();
        if self.cell.get().is_some() {
            return std::future::pending().await;
        }
        filled.await;
    }
}

/// Token bucket arithmetic shared by the engines: `(tokens, updated)` after taking `n` at
/// `now`, or the seconds until it would fit.
pub(crate) fn bucket_take(
    state: Option<(f64, i64)>,
    n: f64,
    rate: f64,
    burst: f64,
    now: i64,
) -> Result<(f64, i64), f64> {
    let (tokens, last) = state.unwrap_or((burst, now));
    let elapsed = (now - last).max(0) as f64 / 1000.0;
    let available = (tokens + elapsed * rate).min(burst);
    if available >= n {
        Ok((available - n, now.max(last)))
    } else if n > burst || rate <= 0.0 {
        Err(f64::INFINITY)
    } else {
        Err((n - available) / rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_with_time_and_refuse_without_taking() {
        let t = 1_000_000;
        let (tokens, at) = bucket_take(None, 50.0, 1.0, 60.0, t).expect("full bucket");
        assert_eq!((tokens, at), (10.0, t));
        assert_eq!(
            bucket_take(Some((tokens, at)), 20.0, 1.0, 60.0, t),
            Err(10.0)
        );
        let (tokens, _) =
            bucket_take(Some((tokens, at)), 20.0, 1.0, 60.0, t + 10_000).expect("refilled");
        assert_eq!(tokens, 0.0);
        assert_eq!(bucket_take(None, 61.0, 1.0, 60.0, t), Err(f64::INFINITY));
    }
}
