//! Durable purge records behind a small trait ([`PurgeStore`]), so a shared database can
//! serve several replicas later. [`RedbStore`] keeps them in one redb file under
//! `[purge] data_dir`; every write commits with fsync before it returns.
//!
//! Tables: `purges` (id → JSON record), `keys` (idempotency key → id), `order`
//! (sequence → id, for newest-first listing) and `active` (id → sequence, for purges with a
//! job not finished yet: what a restart resumes).

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::purge::config::ProviderKind;

const PURGES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("purges");
const KEYS: TableDefinition<'_, &str, &str> = TableDefinition::new("keys");
const ORDER: TableDefinition<'_, u64, &str> = TableDefinition::new("order");
const ACTIVE: TableDefinition<'_, &str, u64> = TableDefinition::new("active");

/// Kind of a purge, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredKind {
    /// Files.
    File,
    /// Directories.
    Directory,
    /// Cache tags.
    CacheTag,
    /// Pre-warm.
    Prewarm,
}

/// Lifecycle of a job, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Not sent yet.
    Waiting,
    /// Accepted by the provider.
    InProgress,
    /// Done.
    Completed,
    /// Given up.
    Failed,
}

impl JobState {
    /// Completed or failed.
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed)
    }
}

/// What a job asks of its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobAction {
    /// CloudFront CreateInvalidation.
    Invalidate,
    /// Aliyun RefreshObjectCaches, ObjectType File.
    RefreshFile,
    /// Aliyun RefreshObjectCaches, ObjectType Directory.
    RefreshDirectory,
    /// Aliyun PushObjectCache.
    Push,
}

/// One provider request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Provider.
    pub provider: ProviderKind,
    /// Distribution id or domain.
    pub resource: String,
    /// What to ask.
    pub action: JobAction,
    /// Normalised paths (CloudFront) or URLs (Aliyun).
    pub paths: Vec<String>,
    /// How many of `paths` are wildcards.
    pub wildcards: u32,
    /// State.
    pub state: JobState,
    /// Provider's id, once accepted.
    pub provider_job_id: String,
    /// Provider's own status text.
    pub status_text: String,
    /// Why it waits / what failed.
    pub detail: String,
    /// CloudFront CallerReference (empty for Aliyun).
    pub caller_reference: String,
    /// Submission attempts so far.
    pub attempts: u32,
    /// After a retryable failure, not tried again before this (unix ms; backoff + jitter).
    #[serde(default)]
    pub not_before_ms: i64,
    /// Last change, unix ms.
    pub updated_at_ms: i64,
}

/// A path that could not be purged as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRecord {
    /// As the caller sent it.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// Aliyun quota seen when the purge was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRecord {
    /// Provider.
    pub provider: ProviderKind,
    /// Domain.
    pub resource: String,
    /// URLs left today.
    pub url_remain: i64,
    /// Directories left today.
    pub dir_remain: i64,
    /// Pre-warms left today.
    pub preload_remain: i64,
}

/// One accepted purge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeRecord {
    /// `pg_` + 32 hex digits.
    pub id: String,
    /// Acceptance order; set by the store.
    pub seq: u64,
    /// The client that made it (its configured name; empty when authentication is off).
    /// Idempotency keys are scoped to it.
    #[serde(default)]
    pub client: String,
    /// Caller's key, or the id when the caller gave none.
    pub idempotency_key: String,
    /// SHA-256 of target, kind and paths: the same key with another request is refused.
    pub fingerprint: String,
    /// Target name.
    pub target: String,
    /// Kind.
    pub kind: StoredKind,
    /// Accepted, unix ms.
    pub created_at_ms: i64,
    /// Rejected items.
    pub rejected: Vec<RejectedRecord>,
    /// Provider requests.
    pub jobs: Vec<JobRecord>,
    /// Aliyun quota at acceptance.
    pub quota: Vec<QuotaRecord>,
}

/// Where an idempotency key is stored: per client, so two clients' keys never meet.
pub fn key_slot(client: &str, key: &str) -> String {
    format!("{client}\u{1f}{key}")
}

impl PurgeRecord {
    /// This record's idempotency key slot ([`key_slot`]).
    pub fn key_slot(&self) -> String {
        key_slot(&self.client, &self.idempotency_key)
    }

    /// Every job finished.
    pub fn is_finished(&self) -> bool {
        self.jobs.iter().all(|j| j.state.is_finished())
    }
}

/// Outcome of [`PurgeStore::insert`].
#[derive(Debug)]
pub enum Inserted {
    /// Stored (with its sequence number set).
    New(PurgeRecord),
    /// The idempotency key was already taken by this record; nothing was stored.
    Existing(PurgeRecord),
}

/// The store failed (I/O, corruption). Never carries request data or secrets.
#[derive(Debug, thiserror::Error)]
#[error("purge store: {0}")]
pub struct StoreError(pub String);

fn se(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// Durable purge records. Implementations must make `insert` atomic with the key lookup.
pub trait PurgeStore: Send + Sync + 'static {
    /// Stores a new purge unless its idempotency key is taken.
    fn insert(&self, record: PurgeRecord) -> Result<Inserted, StoreError>;
    /// Replaces a stored purge (same id).
    fn update(&self, record: &PurgeRecord) -> Result<(), StoreError>;
    /// One purge by id.
    fn get(&self, id: &str) -> Result<Option<PurgeRecord>, StoreError>;
    /// The purge that holds an idempotency key slot ([`key_slot`]).
    fn get_by_key(&self, key: &str) -> Result<Option<PurgeRecord>, StoreError>;
    /// Newest first, with `seq < before` when given, at most `limit`, optionally one target.
    fn list(
        &self,
        before: Option<u64>,
        limit: usize,
        target: Option<&str>,
    ) -> Result<Vec<PurgeRecord>, StoreError>;
    /// Purges with a job not finished, oldest first.
    fn active(&self) -> Result<Vec<PurgeRecord>, StoreError>;
}

/// [`PurgeStore`] in one redb file.
pub struct RedbStore {
    db: Database,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates) `dir/purges.redb`.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("purges.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(se)?;
        {
            tx.open_table(PURGES).map_err(se)?;
            tx.open_table(KEYS).map_err(se)?;
            tx.open_table(ORDER).map_err(se)?;
            tx.open_table(ACTIVE).map_err(se)?;
        }
        tx.commit().map_err(se)?;
        Ok(RedbStore { db })
    }

    fn decode(bytes: &[u8]) -> Result<PurgeRecord, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError(format!("corrupt record: {e}")))
    }
}

impl PurgeStore for RedbStore {
    fn insert(&self, mut record: PurgeRecord) -> Result<Inserted, StoreError> {
        let tx = self.db.begin_write().map_err(se)?;
        {
            let mut keys = tx.open_table(KEYS).map_err(se)?;
            let mut purges = tx.open_table(PURGES).map_err(se)?;
            let slot = record.key_slot();
            let existing = keys
                .get(slot.as_str())
                .map_err(se)?
                .map(|v| v.value().to_owned());
            if let Some(id) = existing {
                let rec = purges
                    .get(id.as_str())
                    .map_err(se)?
                    .ok_or_else(|| StoreError(format!("key points at missing purge {id}")))?;
                return Ok(Inserted::Existing(Self::decode(rec.value())?));
            }
            let mut order = tx.open_table(ORDER).map_err(se)?;
            let seq = order.last().map_err(se)?.map_or(1, |(k, _)| k.value() + 1);
            record.seq = seq;
            let json = serde_json::to_vec(&record).map_err(se)?;
            purges
                .insert(record.id.as_str(), json.as_slice())
                .map_err(se)?;
            keys.insert(slot.as_str(), record.id.as_str()).map_err(se)?;
            order.insert(seq, record.id.as_str()).map_err(se)?;
            if !record.is_finished() {
                let mut active = tx.open_table(ACTIVE).map_err(se)?;
                active.insert(record.id.as_str(), seq).map_err(se)?;
            }
        }
        tx.commit().map_err(se)?;
        Ok(Inserted::New(record))
    }

    fn update(&self, record: &PurgeRecord) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(se)?;
        {
            let mut purges = tx.open_table(PURGES).map_err(se)?;
            let json = serde_json::to_vec(record).map_err(se)?;
            purges
                .insert(record.id.as_str(), json.as_slice())
                .map_err(se)?;
            let mut active = tx.open_table(ACTIVE).map_err(se)?;
            if record.is_finished() {
                active.remove(record.id.as_str()).map_err(se)?;
            } else {
                active.insert(record.id.as_str(), record.seq).map_err(se)?;
            }
        }
        tx.commit().map_err(se)
    }

    fn get(&self, id: &str) -> Result<Option<PurgeRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(se)?;
        let purges = tx.open_table(PURGES).map_err(se)?;
        match purges.get(id).map_err(se)? {
            Some(v) => Ok(Some(Self::decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn get_by_key(&self, key: &str) -> Result<Option<PurgeRecord>, StoreError> {
        let id = {
            let tx = self.db.begin_read().map_err(se)?;
            let keys = tx.open_table(KEYS).map_err(se)?;
            keys.get(key).map_err(se)?.map(|v| v.value().to_owned())
        };
        match id {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }

    fn list(
        &self,
        before: Option<u64>,
        limit: usize,
        target: Option<&str>,
    ) -> Result<Vec<PurgeRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(se)?;
        let order = tx.open_table(ORDER).map_err(se)?;
        let purges = tx.open_table(PURGES).map_err(se)?;
        let mut out = Vec::new();
        let range = order.range(..before.unwrap_or(u64::MAX)).map_err(se)?;
        for item in range.rev() {
            let (_, id) = item.map_err(se)?;
            let Some(v) = purges.get(id.value()).map_err(se)? else {
                continue;
            };
            let rec = Self::decode(v.value())?;
            if target.is_some_and(|t| t != rec.target) {
                continue;
            }
            out.push(rec);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn active(&self) -> Result<Vec<PurgeRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(se)?;
        let active = tx.open_table(ACTIVE).map_err(se)?;
        let purges = tx.open_table(PURGES).map_err(se)?;
        let mut out = Vec::new();
        for item in active.iter().map_err(se)? {
            let (id, _) = item.map_err(se)?;
            if let Some(v) = purges.get(id.value()).map_err(se)? {
                out.push(Self::decode(v.value())?);
            }
        }
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }
}

/// [`PurgeStore`] in memory: nothing survives a restart. Used when no `[[targets]]` are
/// configured (so a signing-only server touches no files) and in tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: std::sync::Mutex<Vec<PurgeRecord>>,
}

impl MemoryStore {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Vec<PurgeRecord>>, StoreError> {
        self.records
            .lock()
            .map_err(|_| StoreError("memory store poisoned".into()))
    }
}

impl PurgeStore for MemoryStore {
    fn insert(&self, mut record: PurgeRecord) -> Result<Inserted, StoreError> {
        let mut all = self.lock()?;
        if let Some(r) = all.iter().find(|r| r.key_slot() == record.key_slot()) {
            return Ok(Inserted::Existing(r.clone()));
        }
        record.seq = all.last().map_or(1, |r| r.seq + 1);
        all.push(record.clone());
        Ok(Inserted::New(record))
    }

    fn update(&self, record: &PurgeRecord) -> Result<(), StoreError> {
        let mut all = self.lock()?;
        match all.iter_mut().find(|r| r.id == record.id) {
            Some(r) => {
                *r = record.clone();
                Ok(())
            }
            None => Err(StoreError(format!("no purge {}", record.id))),
        }
    }

    fn get(&self, id: &str) -> Result<Option<PurgeRecord>, StoreError> {
        Ok(self.lock()?.iter().find(|r| r.id == id).cloned())
    }

    fn get_by_key(&self, key: &str) -> Result<Option<PurgeRecord>, StoreError> {
        Ok(self.lock()?.iter().find(|r| r.key_slot() == key).cloned())
    }

    fn list(
        &self,
        before: Option<u64>,
        limit: usize,
        target: Option<&str>,
    ) -> Result<Vec<PurgeRecord>, StoreError> {
        Ok(self
            .lock()?
            .iter()
            .rev()
            .filter(|r| before.is_none_or(|b| r.seq < b))
            .filter(|r| target.is_none_or(|t| t == r.target))
            .take(limit)
            .cloned()
            .collect())
    }

    fn active(&self) -> Result<Vec<PurgeRecord>, StoreError> {
        Ok(self
            .lock()?
            .iter()
            .filter(|r| !r.is_finished())
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(id: &str, key: &str, state: JobState) -> PurgeRecord {
        PurgeRecord {
            id: id.into(),
            seq: 0,
            client: String::new(),
            idempotency_key: key.into(),
            fingerprint: "f".into(),
            target: "site".into(),
            kind: StoredKind::File,
            created_at_ms: 1,
            rejected: vec![],
            jobs: vec![JobRecord {
                provider: ProviderKind::Cloudfront,
                resource: "E1".into(),
                action: JobAction::Invalidate,
                paths: vec!["/a".into()],
                wildcards: 0,
                state,
                provider_job_id: String::new(),
                status_text: String::new(),
                detail: String::new(),
                caller_reference: "r".into(),
                attempts: 0,
                not_before_ms: 0,
                updated_at_ms: 1,
            }],
            quota: vec![],
        }
    }

    /// The trait's contract, run against any implementation.
    fn contract(s: &dyn PurgeStore) {
        let Inserted::New(a) = s
            .insert(record("pg_a", "k1", JobState::Waiting))
            .expect("a")
        else {
            panic!("a is new")
        };
        assert_eq!(a.seq, 1);
        assert!(matches!(
            s.insert(record("pg_b", "k1", JobState::Waiting)).expect("b"),
            Inserted::Existing(r) if r.id == "pg_a"
        ));
        let Inserted::New(mut c) = s
            .insert(record("pg_c", "k2", JobState::Waiting))
            .expect("c")
        else {
            panic!("c is new")
        };
        c.jobs[0].state = JobState::Completed;
        s.update(&c).expect("update");
        let ids = |v: Vec<PurgeRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(s.active().expect("active")), ["pg_a"]);
        assert_eq!(ids(s.list(None, 10, None).expect("list")), ["pg_c", "pg_a"]);
        assert_eq!(ids(s.list(Some(2), 10, None).expect("list")), ["pg_a"]);
        assert_eq!(ids(s.list(None, 1, None).expect("list")), ["pg_c"]);
        assert!(s.list(None, 10, Some("other")).expect("list").is_empty());
    }

    #[test]
    fn both_stores_keep_the_contract() {
        contract(&MemoryStore::default());
        let dir = tempfile::tempdir().expect("tempdir");
        contract(&RedbStore::open(dir.path()).expect("open"));
    }

    #[test]
    fn records_survive_reopen_keys_dedupe_and_active_tracks_unfinished() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = RedbStore::open(dir.path()).expect("open");
            let Inserted::New(a) = s
                .insert(record("pg_a", "k1", JobState::Waiting))
                .expect("a")
            else {
                panic!("a is new")
            };
            assert_eq!(a.seq, 1);
            assert!(matches!(
                s.insert(record("pg_b", "k1", JobState::Waiting)).expect("b"),
                Inserted::Existing(r) if r.id == "pg_a"
            ));
            let Inserted::New(mut c) = s
                .insert(record("pg_c", "k2", JobState::Waiting))
                .expect("c")
            else {
                panic!("c is new")
            };
            c.jobs[0].state = JobState::Completed;
            s.update(&c).expect("update");
        }
        let s = RedbStore::open(dir.path()).expect("reopen");
        assert_eq!(s.get("pg_b").expect("get"), None);
        assert_eq!(
            s.get_by_key(&key_slot("", "k1"))
                .expect("key")
                .map(|r| r.id),
            Some("pg_a".into())
        );
        let active: Vec<_> = s
            .active()
            .expect("active")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(active, vec!["pg_a".to_string()]);
        let listed: Vec<_> = s
            .list(None, 10, None)
            .expect("list")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, vec!["pg_c".to_string(), "pg_a".to_string()]);
        let page2: Vec<_> = s
            .list(Some(2), 10, None)
            .expect("list")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(page2, vec!["pg_a".to_string()]);
        assert!(s.list(None, 10, Some("other")).expect("list").is_empty());
    }
}
