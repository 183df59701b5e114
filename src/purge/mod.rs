//! Cache purge: CloudFront invalidations and Alibaba Cloud CDN refreshes behind one API,
//! shared by any number of replicas.
//!
//! Data flow of a `Purge` ([`Purger::purge`]):
//!
//! 1. The target names one or more provider entries ([`provider::Provider`], one file per
//!    provider). A client's known idempotency key answers with its stored purge.
//! 2. [`plan`] normalises the items per provider and splits them into requests within the
//!    provider's per-request limits; Aliyun's day quota is checked ([`Provider::admit`]).
//! 3. The purge and its jobs are written to the [`store`] (the embedded redb file for one
//!    process, PostgreSQL for many) before anything goes upstream.
//! 4. The [`scheduler`] of the replica that holds (or can claim) each job's queue sends
//!    what fits now and the call answers; what waits is sent by whichever replica holds the
//!    queue as room frees, and polled to completion.
//!
//! [`Provider::admit`]: provider::Provider::admit

mod admission;
pub mod aliyun;
pub mod cloudfront;
pub mod coalesce;
pub mod config;
pub mod error;
pub mod model;
pub mod paths;
pub mod plan;
pub mod provider;
pub mod retry;
pub mod scheduler;
mod setup;
pub mod store;

pub use error::{ErrorClass, ProviderError, PurgeError};
pub use model::PurgeKind;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::purge::admission::Admission;
use crate::purge::aliyun::AliyunCredentials;
use crate::purge::config::PurgeConfig;
use crate::purge::model::{JobRecord, PurgeRecord, QueueKey, now_ms};
use crate::purge::scheduler::{Providers, Scheduler};
use crate::purge::store::embedded::EmbeddedStore;
use crate::purge::store::{Inserted, PurgeStore, StoreError, StoreSlot};

/// A purge as asked for.
#[derive(Debug, Clone)]
pub struct PurgeInput {
    /// Target name.
    pub target: String,
    /// Paths or URLs.
    pub paths: Vec<String>,
    /// Kind.
    pub kind: PurgeKind,
    /// Caller's idempotency key; empty for none. Scoped to `client`.
    pub idempotency_key: String,
    /// The calling client's configured name (empty when authentication is off).
    pub client: String,
    /// Most milliseconds the purge may wait for a provider's quota to reset before it is
    /// sent (0: as long as it takes); past it the paths are refused instead.
    pub max_wait_ms: i64,
}

/// A stored purge and whether this call found it by its idempotency key.
#[derive(Debug, Clone)]
pub struct PurgeView {
    /// The record.
    pub record: PurgeRecord,
    /// Found by idempotency key; nothing was sent.
    pub deduplicated: bool,
}

/// Credentials and store overrides (tests, embedding). `None` = the standard sources.
#[derive(Default)]
pub struct PurgeOptions {
    /// AWS credentials; default: the standard AWS chain.
    pub aws_credentials: Option<aws_sdk_cloudfront::config::SharedCredentialsProvider>,
    /// Aliyun credentials; default: `ALIBABA_CLOUD_ACCESS_KEY_*` from the environment.
    pub aliyun_credentials: Option<AliyunCredentials>,
    /// Store; default: PostgreSQL at `[purge] database_url`, else the embedded store in
    /// `[purge] data_dir` (in memory when no `[[targets]]` are configured).
    pub store: Option<Arc<dyn PurgeStore>>,
}

impl std::fmt::Debug for PurgeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurgeOptions")
            .field("aws_credentials", &self.aws_credentials.is_some())
            .field("aliyun_credentials", &self.aliyun_credentials)
            .finish_non_exhaustive()
    }
}

/// The purge service: targets, store, scheduler.
pub struct Purger {
    cfg: PurgeConfig,
    providers: Arc<Providers>,
    slot: Arc<StoreSlot>,
    scheduler: Arc<Scheduler>,
    changes: broadcast::Sender<String>,
    /// When `get_fresh` last asked for a pass, per purge.
    polled: std::sync::Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Purger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Purger")
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

impl Purger {
    /// Builds a provider for every `[[targets]]` entry and opens the store. A store that
    /// cannot open now (database down, data file held by another process) leaves purges
    /// UNAVAILABLE and keeps trying; a database whose schema is newer than this build is
    /// an error.
    pub async fn new(
        cfg: &config::PurgeConfig,
        targets: &[config::TargetConfig],
        options: PurgeOptions,
    ) -> Result<Arc<Purger>, PurgeError> {
        let cfg = cfg.clone();
        let slot = Arc::new(match options.store {
            Some(s) => StoreSlot::open(s),
            // Nothing to purge: a signing-only server opens no files and no database.
            None if targets.is_empty() => StoreSlot::open(Arc::new(EmbeddedStore::in_memory()?)),
            None => match setup::open_store(&cfg).await {
                Ok(s) => {
                    tracing::info!(engine = s.engine(), "purge store opened");
                    StoreSlot::open(s)
                }
                Err(e @ StoreError::SchemaTooNew { .. }) => return Err(PurgeError::Store(e)),
                Err(e) => {
                    tracing::error!(error = %e, "purge store cannot open now: purge calls answer UNAVAILABLE until it does; signing is not affected");
                    StoreSlot::empty(e.to_string())
                }
            },
        });
        if slot.get().is_err() {
            setup::open_later(Arc::downgrade(&slot), cfg.clone());
        }
        let providers = Arc::new(
            setup::providers(
                &cfg,
                targets,
                options.aws_credentials,
                options.aliyun_credentials,
            )
            .await?,
        );
        let (changes, _) = broadcast::channel(256);
        let scheduler = Arc::new(Scheduler::new(
            Arc::clone(&slot),
            Arc::clone(&providers),
            cfg.clone(),
            setup::replica_name(),
            changes.clone(),
        ));
        Ok(Arc::new(Purger {
            cfg,
            providers,
            slot,
            scheduler,
            changes,
            polled: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    /// `[purge]` settings in force.
    pub fn config(&self) -> &PurgeConfig {
        &self.cfg
    }

    /// Whether a `[[targets]]` entry has this name.
    pub fn has_target(&self, name: &str) -> bool {
        self.providers.has_target(name)
    }

    /// Announces purge ids whose state this replica changed.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    fn store(&self) -> Result<Arc<dyn PurgeStore>, PurgeError> {
        self.slot.get().map_err(PurgeError::Store)
    }

    /// Takes `n` paths from a client's purge rate (`per_minute`, burst one minute's
    /// worth), shared by every replica through the store. `Ok(Err(seconds))`: refused.
    pub async fn take_paths(
        &self,
        client: &str,
        n: u64,
        per_minute: u32,
    ) -> Result<Result<(), f64>, PurgeError> {
        let per_minute = f64::from(per_minute);
        Ok(self
            .store()?
            .take_tokens(
                client,
                "purge_paths",
                n as f64,
                per_minute / 60.0,
                per_minute,
                now_ms(),
            )
            .await?)
    }

    /// Accepts a purge: validate, dedupe, plan, store, send what fits by `deadline`.
    pub async fn purge(
        &self,
        input: PurgeInput,
        deadline: Instant,
    ) -> Result<PurgeView, PurgeError> {
        let providers = self
            .providers
            .target(&input.target)
            .ok_or_else(|| PurgeError::UnknownTarget(input.target.clone()))?;
        if input.paths.is_empty() {
            return Err(PurgeError::Invalid {
                field: "paths",
                reason: "at least one path is required".into(),
            });
        }
        if input.paths.len() > self.cfg.max_paths {
            return Err(PurgeError::Invalid {
                field: "paths",
                reason: format!(
                    "{} paths exceeds the purge.max_paths limit of {}",
                    input.paths.len(),
                    self.cfg.max_paths
                ),
            });
        }
        if input.idempotency_key.len() > 128 {
            return Err(PurgeError::Invalid {
                field: "idempotency_key",
                reason: "at most 128 bytes".into(),
            });
        }
        let store = self.store()?;
        let fingerprint = plan::fingerprint(&input.target, input.kind, &input.paths);
        if !input.idempotency_key.is_empty()
            && let Some(rec) = store
                .get_by_key(&input.client, &input.idempotency_key)
                .await?
            && !rec.wholly_failed()
        {
            return Self::deduplicated(rec, &fingerprint);
        }
        let id = format!("pg_{}", uuid::Uuid::new_v4().simple());
        let now = now_ms();
        let planned = plan::plan(providers, input.kind, &input.paths, &id, now);
        if planned.is_empty() {
            let reasons: Vec<String> = planned
                .rejected
                .iter()
                .take(3)
                .map(|r| format!("{:?}: {}", r.path, r.reason))
                .collect();
            return Err(PurgeError::Invalid {
                field: "paths",
                reason: format!("nothing can be purged as given ({})", reasons.join("; ")),
            });
        }
        let Admission {
            jobs,
            quota,
            rejected,
            guards,
        } = admission::admit(
            store.as_ref(),
            providers,
            planned.legs,
            planned.rejected,
            input.max_wait_ms,
            now,
            deadline,
        )
        .await?;
        let queues: Vec<QueueKey> = jobs
            .iter()
            .map(JobRecord::queue)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let record = PurgeRecord {
            idempotency_key: if input.idempotency_key.is_empty() {
                id.clone()
            } else {
                input.idempotency_key.clone()
            },
            id,
            seq: 0,
            client: input.client.clone(),
            fingerprint: fingerprint.clone(),
            target: input.target.clone(),
            kind: input.kind,
            created_at_ms: now,
            rejected,
            jobs,
            quota,
        };
        let inserted = store.insert(record).await?;
        drop(guards);
        let record = match inserted {
            Inserted::New(r) => r,
            Inserted::Existing(r) => return Self::deduplicated(r, &fingerprint),
        };
        tracing::info!(
            purge_id = %record.id,
            target = %record.target,
            jobs = record.jobs.len(),
            rejected = record.rejected.len(),
            "purge accepted"
        );
        for (provider, n) in planned.rejected_per_provider {
            if n > 0 {
                metrics::counter!(crate::metrics::PURGE_PATHS, "provider" => provider.as_str(), "outcome" => "rejected")
                    .increment(n);
            }
        }
        let _ = self.changes.send(record.id.clone());
        // Send what fits now on the queues this replica holds or can claim; the purge is
        // stored either way and whichever replica holds a queue sends it.
        let mut report = self.scheduler.kick(&queues, deadline).await;
        self.scheduler.wake();
        // The purge is stored: from here the answer names it, whatever the read gives. A
        // read that fails answers with the record as inserted (never UNAVAILABLE, which
        // says nothing was stored: a caller retrying without a key would purge twice).
        let record = match store.get(&record.id).await {
            Ok(found) => found.unwrap_or(record),
            Err(e) => {
                tracing::warn!(error = %e, purge_id = %record.id, "purge stored, but reading it back failed; answering with it as stored");
                record
            }
        };
        // Every job failed on its first try with a non-retryable error: say so.
        if record.wholly_failed()
            && let Some(e) = report.failures.remove(&record.id)
        {
            return Err(PurgeError::Provider(e));
        }
        Ok(PurgeView {
            record,
            deduplicated: false,
        })
    }

    fn deduplicated(rec: PurgeRecord, fingerprint: &str) -> Result<PurgeView, PurgeError> {
        if rec.fingerprint != fingerprint {
            return Err(PurgeError::KeyReused(rec.id));
        }
        Ok(PurgeView {
            record: rec,
            deduplicated: true,
        })
    }

    /// One purge by id.
    pub async fn get(&self, id: &str) -> Result<PurgeView, PurgeError> {
        let record = self
            .store()?
            .get(id)
            .await?
            .ok_or_else(|| PurgeError::NotFound(id.to_owned()))?;
        Ok(PurgeView {
            record,
            deduplicated: false,
        })
    }

    /// One purge, after a pass over its queues when this replica holds or can claim them
    /// (at most once a second per purge, and only until `deadline`); otherwise as stored
    /// (the replica that holds a queue polls it every `[purge] poll_interval_ms`).
    pub async fn get_fresh(&self, id: &str, deadline: Instant) -> Result<PurgeView, PurgeError> {
        let view = self.get(id).await?;
        if view.record.is_finished() {
            return Ok(view);
        }
        let now = Instant::now();
        let due = self.polled.lock().is_ok_and(|mut m| {
            m.retain(|_, t| now.duration_since(*t) < Duration::from_secs(60));
            match m.get(id) {
                Some(t) if now.duration_since(*t) < Duration::from_secs(1) => false,
                _ => {
                    m.insert(id.to_owned(), now);
                    true
                }
            }
        });
        if !due {
            return Ok(view);
        }
        let queues: Vec<QueueKey> = view
            .record
            .jobs
            .iter()
            .filter(|j| !j.state.is_finished())
            .map(JobRecord::queue)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        self.scheduler.kick(&queues, deadline).await;
        self.get(id).await
    }

    /// Newest first: up to `page_size` purges older than `page_token`, and the next token.
    pub async fn list(
        &self,
        target: Option<&str>,
        page_size: usize,
        page_token: &str,
    ) -> Result<(Vec<PurgeRecord>, String), PurgeError> {
        let before = if page_token.is_empty() {
            None
        } else {
            Some(page_token.parse::<u64>().map_err(|_| PurgeError::Invalid {
                field: "page_token",
                reason: "not a token this server issued".into(),
            })?)
        };
        let size = page_size.clamp(1, 500);
        let recs = self.store()?.list(before, size + 1, target).await?;
        let more = recs.len() > size;
        let recs: Vec<_> = recs.into_iter().take(size).collect();
        let next = match (more, recs.last()) {
            (true, Some(r)) => r.seq.to_string(),
            _ => String::new(),
        };
        Ok((recs, next))
    }

    /// Background work until `shutdown` resolves: claims queues, sends, polls, deletes
    /// purges past the retention.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        Arc::clone(&self.scheduler).run(shutdown).await;
    }
}

#[cfg(test)]
mod tests;
