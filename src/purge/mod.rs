//! Cache purge: CloudFront invalidations and Alibaba Cloud CDN refreshes behind one API.
//!
//! Data flow of a `Purge`:
//!
//! 1. [`Purger::purge`] looks the target up (a name may fan out to several CDNs), answers
//!    a known idempotency key with the stored purge (nothing is sent), normalises each
//!    item per provider ([`paths`]) and splits the result into provider jobs that respect
//!    the documented per-request limits. Aliyun's daily quota is checked first.
//! 2. The purge is written to the [`store`] (fsync) before anything goes upstream.
//! 3. One pass of the scheduler sends, oldest purge first, every waiting job that fits:
//!    CloudFront jobs only while the distribution has room under 3,000 file paths and 15
//!    wildcard paths in progress (ListInvalidations/GetInvalidation tell), Aliyun jobs at
//!    once. What does not fit stays `WAITING` with the reason in `detail`.
//! 4. A background worker ([`Purger::run`]) polls jobs in progress and sends waiting ones
//!    as room frees; on restart it resumes whatever the store says is unfinished.
//!
//! Upstream calls retry throttling, "too many in progress" and 5xx with backoff and jitter
//! up to the caller's deadline ([`mod@retry`]); other errors fail the job with a clear reason.

pub mod aliyun;
pub mod cloudfront;
pub mod config;
pub mod paths;
pub mod retry;
pub mod store;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify, broadcast};
use tokio::time::Instant;

use crate::purge::aliyun::{Aliyun, AliyunCredentials};
use crate::purge::cloudfront::CloudFront;
use crate::purge::config::{ProviderKind, PurgeConfig, TargetConfig};
use crate::purge::paths::{CloudFrontPath, ItemKind};
use crate::purge::retry::{Backoff, Retry, retry};
use crate::purge::store::{
    Inserted, JobAction, JobRecord, JobState, PurgeRecord, PurgeStore, QuotaRecord, RedbStore,
    RejectedRecord, StoreError, StoredKind,
};

/// What a provider error means for the caller and for retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Rate limited: retry with backoff.
    Throttled,
    /// CloudFront `TooManyInvalidationsInProgress`: wait for room.
    Busy,
    /// 5xx, timeouts, connection failures: retry.
    Unavailable,
    /// Credentials refused or not allowed.
    Denied,
    /// The distribution / domain does not exist.
    NotFound,
    /// The provider refused the request as malformed.
    Invalid,
    /// CloudFront `InvalidationBatchAlreadyExists`.
    Conflict,
    /// Daily quota used up.
    QuotaExhausted,
    /// Our clock is too far from the provider's.
    Clock,
    /// No credentials configured.
    Credentials,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// Retrying can help.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::Throttled | ErrorClass::Busy | ErrorClass::Unavailable
        )
    }
}

/// An error a CDN API returned. Holds the provider's code and message, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} {operation} failed: {code}{}: {message}", provider.as_str(), http_status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct ProviderError {
    /// Which CDN.
    pub provider: ProviderKind,
    /// API operation.
    pub operation: String,
    /// Provider error code.
    pub code: String,
    /// Provider message (truncated).
    pub message: String,
    /// HTTP status, when there was a response.
    pub http_status: Option<u16>,
    /// What it means.
    pub class: ErrorClass,
}

fn retry_class(e: &ProviderError) -> Retry {
    if e.class.is_retryable() && e.class != ErrorClass::Busy {
        Retry::After(None)
    } else {
        Retry::Never
    }
}

/// A purge request failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    /// `target` names no `[[targets]]` entry.
    #[error("target {0:?} is not configured")]
    UnknownTarget(String),
    /// A request field is malformed.
    #[error("{field}: {reason}")]
    Invalid {
        /// Field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No purge with this id.
    #[error("purge {0:?} not found")]
    NotFound(String),
    /// The idempotency key belongs to a different request.
    #[error("idempotency_key was already used for a different request (purge {0}); use a new key")]
    KeyReused(String),
    /// Aliyun's daily quota cannot cover this purge; nothing was sent.
    #[error(
        "aliyun refresh quota for {domain} is exhausted: {needed} {what} needed, {remain} left today; nothing was sent"
    )]
    QuotaExhausted {
        /// Domain.
        domain: String,
        /// `URLs`, `directories` or `pre-warm URLs`.
        what: &'static str,
        /// Needed by this purge.
        needed: i64,
        /// Left today.
        remain: i64,
    },
    /// The provider refused (after retries where they help).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PurgeError {
    /// Bounded label for metrics and logs (never request data or secrets).
    pub fn label(&self) -> &'static str {
        match self {
            PurgeError::UnknownTarget(_) => "unknown_target",
            PurgeError::Invalid { .. } => "invalid_argument",
            PurgeError::NotFound(_) => "not_found",
            PurgeError::KeyReused(_) => "key_reused",
            PurgeError::QuotaExhausted { .. } => "quota_exhausted",
            PurgeError::Provider(e) => match e.class {
                ErrorClass::Throttled => "provider_throttled",
                ErrorClass::Busy => "provider_busy",
                ErrorClass::Unavailable => "provider_unavailable",
                ErrorClass::Denied => "provider_denied",
                ErrorClass::NotFound => "provider_not_found",
                ErrorClass::Invalid => "provider_invalid",
                ErrorClass::Conflict => "provider_conflict",
                ErrorClass::QuotaExhausted => "provider_quota",
                ErrorClass::Clock => "provider_clock",
                ErrorClass::Credentials => "provider_credentials",
                ErrorClass::Other => "provider_other",
            },
            PurgeError::Store(_) => "store",
        }
    }
}

/// Kind of items in a purge.
pub type PurgeKind = StoredKind;

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
    /// Store; default: [`RedbStore`] in `[purge] data_dir` (in memory when no
    /// `[[targets]]` are configured).
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

enum LegClient {
    CloudFront(CloudFront),
    Aliyun(Aliyun),
}

struct Leg {
    target: TargetConfig,
    client: LegClient,
}

/// Path counts of one invalidation: (file paths, wildcard paths).
type Counts = (u32, u32);

/// The purge service: targets, store, scheduler.
pub struct Purger {
    cfg: PurgeConfig,
    legs: BTreeMap<String, Vec<Arc<Leg>>>,
    store: Arc<dyn PurgeStore>,
    work: Mutex<()>,
    changes: broadcast::Sender<String>,
    wake: Notify,
    /// Path counts of other clients' in-progress invalidations (pruned as they finish).
    foreign: std::sync::Mutex<HashMap<(String, String), Counts>>,
    /// When `get_fresh` last polled each purge.
    polled: std::sync::Mutex<HashMap<String, Instant>>,
    backoff: Backoff,
}

impl std::fmt::Debug for Purger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Purger")
            .field("targets", &self.legs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Counts the retries an upstream call needed (`attempts - 1`).
fn count_retries(provider: ProviderKind, operation: &'static str, attempts: u32) {
    if attempts > 1 {
        metrics::counter!(crate::metrics::UPSTREAM_RETRIES, "provider" => provider.as_str(), "operation" => operation)
            .increment(u64::from(attempts - 1));
    }
}

/// Metrics for a job that changed state: jobs by outcome, and paths once it finished.
fn count_transition(job: &JobRecord, from: JobState) {
    use crate::metrics::{PURGE_JOBS, PURGE_PATHS};
    let provider = job.provider.as_str();
    if from == JobState::Waiting && job.state != JobState::Waiting {
        metrics::counter!(PURGE_JOBS, "provider" => provider, "outcome" => "submitted")
            .increment(1);
    }
    let outcome = match job.state {
        JobState::Completed => "completed",
        JobState::Failed => "failed",
        JobState::Waiting | JobState::InProgress => return,
    };
    metrics::counter!(PURGE_JOBS, "provider" => provider, "outcome" => outcome).increment(1);
    metrics::counter!(PURGE_PATHS, "provider" => provider, "outcome" => outcome)
        .increment(job.paths.len() as u64);
}

fn describe_metrics() {
    use crate::metrics::{
        ALIYUN_QUOTA_REMAINING, PURGE_JOBS, PURGE_PATHS, UPSTREAM_DURATION, UPSTREAM_RETRIES,
    };
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        PURGE_PATHS,
        "Purge paths, by provider and outcome (completed, failed, rejected)"
    );
    describe_counter!(
        PURGE_JOBS,
        "Purge jobs (provider requests), by provider and outcome (submitted, completed, failed)"
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "CDN provider API call latency, by provider and operation"
    );
    describe_counter!(
        UPSTREAM_RETRIES,
        "Retried CDN provider API calls, by provider and operation"
    );
    describe_gauge!(
        ALIYUN_QUOTA_REMAINING,
        "Aliyun refresh/preload quota left today, by kind"
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn item_kind(k: PurgeKind) -> ItemKind {
    match k {
        StoredKind::File => ItemKind::File,
        StoredKind::Directory => ItemKind::Directory,
        StoredKind::CacheTag => ItemKind::CacheTag,
        StoredKind::Prewarm => ItemKind::Prewarm,
    }
}

fn new_job(leg: &TargetConfig, action: JobAction, paths: Vec<String>, wildcards: u32) -> JobRecord {
    JobRecord {
        provider: leg.provider,
        resource: leg.resource().to_owned(),
        action,
        paths,
        wildcards,
        state: JobState::Waiting,
        provider_job_id: String::new(),
        status_text: String::new(),
        detail: "accepted; not sent yet".into(),
        caller_reference: String::new(),
        attempts: 0,
        not_before_ms: 0,
        updated_at_ms: now_ms(),
    }
}

/// Paths CloudFront bills for in a job (a wildcard counts as one, so does each path).
pub fn paths_billed(job: &JobRecord) -> u32 {
    if job.provider == ProviderKind::Cloudfront {
        job.paths.len() as u32
    } else {
        0
    }
}

/// Replaces more than `threshold` file paths directly under one directory by `dir/*`.
fn collapse(items: Vec<CloudFrontPath>, threshold: usize) -> Vec<CloudFrontPath> {
    if threshold == 0 {
        return items;
    }
    let parent = |p: &str| p.rsplit_once('/').map(|(d, _)| d.to_owned());
    let mut per_dir: HashMap<String, usize> = HashMap::new();
    for it in &items {
        if let CloudFrontPath::File(p) = it
            && let Some(d) = parent(p)
        {
            *per_dir.entry(d).or_default() += 1;
        }
    }
    let mut emitted = HashSet::new();
    let mut out = Vec::new();
    for it in items {
        match &it {
            CloudFrontPath::File(p) => match parent(p) {
                Some(d) if per_dir.get(&d).copied().unwrap_or(0) > threshold => {
                    if emitted.insert(d.clone()) {
                        out.push(CloudFrontPath::Wildcard(format!("{d}/*")));
                    }
                }
                _ => out.push(it),
            },
            _ => out.push(it),
        }
    }
    out
}

impl Purger {
    /// Builds clients for every `[[targets]]` entry and opens the store.
    pub async fn new(
        config: &crate::config::Config,
        options: PurgeOptions,
    ) -> Result<Arc<Purger>, PurgeError> {
        let cfg = config.purge.clone();
        describe_metrics();
        let store: Arc<dyn PurgeStore> = match options.store {
            Some(s) => s,
            // Nothing to purge: a signing-only server opens no files.
            None if config.targets.is_empty() => Arc::new(store::MemoryStore::default()),
            None => Arc::new(RedbStore::open(&cfg.data_dir)?),
        };
        let has_cf = config
            .targets
            .iter()
            .any(|t| t.provider == ProviderKind::Cloudfront);
        let shared = if has_cf {
            Some(cloudfront::sdk_config(options.aws_credentials).await)
        } else {
            None
        };
        let aliyun_creds = options
            .aliyun_credentials
            .or_else(AliyunCredentials::from_env);
        let mut legs: BTreeMap<String, Vec<Arc<Leg>>> = BTreeMap::new();
        for t in &config.targets {
            let client = match (t.provider, &shared) {
                (ProviderKind::Cloudfront, Some(shared)) => {
                    LegClient::CloudFront(CloudFront::new(shared, t.endpoint.as_deref()))
                }
                (ProviderKind::Cloudfront, None) => continue,
                (ProviderKind::Aliyun, _) => {
                    if aliyun_creds.is_none() {
                        tracing::warn!(
                            target_name = %t.name,
                            "ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET not set: purges of this aliyun target will fail"
                        );
                    }
                    LegClient::Aliyun(
                        Aliyun::new(t.endpoint.as_deref(), t.signature, aliyun_creds.clone())
                            .map_err(|reason| PurgeError::Invalid {
                                field: "targets.endpoint",
                                reason,
                            })?,
                    )
                }
            };
            legs.entry(t.name.clone()).or_default().push(Arc::new(Leg {
                target: t.clone(),
                client,
            }));
        }
        for c in &config.clients {
            for t in c.purge_targets.iter().filter(|t| !legs.contains_key(*t)) {
                tracing::warn!(
                    client = %c.name,
                    purge_target = %t,
                    "clients.purge_targets names a target no [[targets]] entry has: its purges will be NOT_FOUND"
                );
            }
        }
        let backoff = Backoff {
            base: Duration::from_millis(cfg.retry_base_ms),
            max: Duration::from_millis(cfg.retry_max_ms),
        };
        let (changes, _) = broadcast::channel(256);
        Ok(Arc::new(Purger {
            cfg,
            legs,
            store,
            work: Mutex::new(()),
            changes,
            wake: Notify::new(),
            foreign: std::sync::Mutex::new(HashMap::new()),
            polled: std::sync::Mutex::new(HashMap::new()),
            backoff,
        }))
    }

    /// `[purge]` settings in force.
    pub fn config(&self) -> &PurgeConfig {
        &self.cfg
    }

    /// Announces purge ids whose state changed.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    /// Accepts a purge: validate, dedupe, plan, store, send what fits by `deadline`.
    pub async fn purge(
        &self,
        input: PurgeInput,
        deadline: Instant,
    ) -> Result<PurgeView, PurgeError> {
        let legs = self
            .legs
            .get(&input.target)
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
        let fingerprint = {
            let mut text = format!("{}\n{:?}\n", input.target, input.kind);
            for p in &input.paths {
                text.push_str(p);
                text.push('\n');
            }
            aliyun::sha256_hex(text.as_bytes())
        };
        if !input.idempotency_key.is_empty()
            && let Some(rec) = self
                .store
                .get_by_key(&store::key_slot(&input.client, &input.idempotency_key))?
        {
            return self.deduplicated(rec, &fingerprint);
        }
        let id = format!("pg_{}", uuid::Uuid::new_v4().simple());
        let key = if input.idempotency_key.is_empty() {
            id.clone()
        } else {
            input.idempotency_key.clone()
        };

        let kind = item_kind(input.kind);
        let multi = legs.len() > 1;
        let mut jobs = Vec::new();
        let mut rejected = Vec::new();
        let mut quota = Vec::new();
        let mut rejected_by_provider: HashMap<ProviderKind, u64> = HashMap::new();
        for leg in legs {
            let t = &leg.target;
            let mut reject = |path: &str, reason: String| {
                *rejected_by_provider.entry(t.provider).or_default() += 1;
                rejected.push(RejectedRecord {
                    path: path.to_owned(),
                    reason: if multi {
                        format!("{} {}: {reason}", t.provider.as_str(), t.resource())
                    } else {
                        reason
                    },
                });
            };
            match &leg.client {
                LegClient::CloudFront(_) => {
                    let mut seen = HashSet::new();
                    let mut items = Vec::new();
                    for p in &input.paths {
                        match paths::cloudfront(t, kind, p) {
                            Ok(n) => {
                                if seen.insert(n.as_str().to_owned()) {
                                    items.push(n);
                                }
                            }
                            Err(r) => reject(p, r),
                        }
                    }
                    let items = collapse(items, self.cfg.cloudfront_collapse_threshold);
                    jobs.extend(self.batch_cloudfront(t, &id, items));
                }
                LegClient::Aliyun(client) => {
                    let mut seen = HashSet::new();
                    let mut urls = Vec::new();
                    for p in &input.paths {
                        match paths::aliyun(t, kind, p) {
                            Ok(u) => {
                                if seen.insert(u.clone()) {
                                    urls.push(u);
                                }
                            }
                            Err(r) => reject(p, r),
                        }
                    }
                    if urls.is_empty() {
                        continue;
                    }
                    let (action, per_call) = match kind {
                        ItemKind::Prewarm => (JobAction::Push, aliyun::MAX_PUSH_PER_CALL),
                        ItemKind::Directory => {
                            (JobAction::RefreshDirectory, aliyun::MAX_DIRS_PER_CALL)
                        }
                        _ => (JobAction::RefreshFile, aliyun::MAX_URLS_PER_CALL),
                    };
                    let (q, attempts) =
                        retry(self.backoff, deadline, |_| client.quota(), retry_class).await;
                    count_retries(ProviderKind::Aliyun, "DescribeRefreshQuota", attempts);
                    let q = q?;
                    for (kind, v) in [
                        ("url", q.url_remain),
                        ("dir", q.dir_remain),
                        ("preload", q.preload_remain),
                    ] {
                        metrics::gauge!(crate::metrics::ALIYUN_QUOTA_REMAINING, "kind" => kind)
                            .set(v as f64);
                    }
                    let (remain, what) = match action {
                        JobAction::Push => (q.preload_remain, "pre-warm URLs"),
                        JobAction::RefreshDirectory => (q.dir_remain, "directories"),
                        _ => (q.url_remain, "URLs"),
                    };
                    if remain < urls.len() as i64 {
                        return Err(PurgeError::QuotaExhausted {
                            domain: t.resource().to_owned(),
                            what,
                            needed: urls.len() as i64,
                            remain,
                        });
                    }
                    quota.push(QuotaRecord {
                        provider: ProviderKind::Aliyun,
                        resource: t.resource().to_owned(),
                        url_remain: q.url_remain,
                        dir_remain: q.dir_remain,
                        preload_remain: q.preload_remain,
                    });
                    for chunk in urls.chunks(per_call) {
                        jobs.push(new_job(t, action, chunk.to_vec(), 0));
                    }
                }
            }
        }
        if jobs.is_empty() {
            let reasons: Vec<String> = rejected
                .iter()
                .take(3)
                .map(|r| format!("{:?}: {}", r.path, r.reason))
                .collect();
            return Err(PurgeError::Invalid {
                field: "paths",
                reason: format!("nothing can be purged as given ({})", reasons.join("; ")),
            });
        }
        let record = PurgeRecord {
            id,
            seq: 0,
            idempotency_key: key,
            client: input.client.clone(),
            fingerprint: fingerprint.clone(),
            target: input.target.clone(),
            kind: input.kind,
            created_at_ms: now_ms(),
            rejected,
            jobs,
            quota,
        };
        let record = match self.store.insert(record)? {
            Inserted::New(r) => r,
            Inserted::Existing(r) => return self.deduplicated(r, &fingerprint),
        };
        tracing::info!(
            purge_id = %record.id,
            target = %record.target,
            jobs = record.jobs.len(),
            rejected = record.rejected.len(),
            "purge accepted"
        );
        for (provider, n) in &rejected_by_provider {
            metrics::counter!(crate::metrics::PURGE_PATHS, "provider" => provider.as_str(), "outcome" => "rejected")
                .increment(*n);
        }
        let _ = self.changes.send(record.id.clone());
        // Send what fits now, unless the worker holds the scheduler past our deadline; the
        // purge is stored either way and the worker sends it.
        let mut failures = HashMap::new();
        if let Ok(guard) = tokio::time::timeout_at(deadline, self.work.lock()).await {
            failures = self.pass(deadline, false).await;
            drop(guard);
        }
        self.wake.notify_one();
        let record = self.store.get(&record.id)?.unwrap_or(record);
        // Every job failed on its first try with the same non-retryable error: say so.
        if record.jobs.iter().all(|j| j.state == JobState::Failed)
            && let Some(e) = failures.remove(&record.id)
        {
            return Err(PurgeError::Provider(e));
        }
        Ok(PurgeView {
            record,
            deduplicated: false,
        })
    }

    fn deduplicated(&self, rec: PurgeRecord, fingerprint: &str) -> Result<PurgeView, PurgeError> {
        if rec.fingerprint != fingerprint {
            return Err(PurgeError::KeyReused(rec.id));
        }
        Ok(PurgeView {
            record: rec,
            deduplicated: true,
        })
    }

    /// CloudFront batches for a purge; each `CallerReference` derives from the purge's own
    /// id, the target and the batch, never from a caller's key (two clients' purges must
    /// never share one, or CloudFront hands the second the first one's invalidation).
    fn batch_cloudfront(
        &self,
        t: &TargetConfig,
        purge_id: &str,
        items: Vec<CloudFrontPath>,
    ) -> Vec<JobRecord> {
        let per_request = self.cfg.cloudfront_max_paths_per_request as usize;
        let max_files = self.cfg.cloudfront_max_files_in_progress as usize;
        let max_wild = self.cfg.cloudfront_max_wildcards_in_progress as usize;
        let mut batches: Vec<(Vec<String>, usize, usize)> = Vec::new();
        let mut cur: (Vec<String>, usize, usize) = (Vec::new(), 0, 0);
        for it in items {
            let wild = matches!(it, CloudFrontPath::Wildcard(_));
            let full = cur.0.len() >= per_request
                || (wild && cur.2 >= max_wild)
                || (!wild && cur.1 >= max_files);
            if full {
                batches.push(std::mem::take(&mut cur));
            }
            if wild {
                cur.2 += 1;
            } else {
                cur.1 += 1;
            }
            cur.0.push(it.as_str().to_owned());
        }
        if !cur.0.is_empty() {
            batches.push(cur);
        }
        batches
            .into_iter()
            .enumerate()
            .map(|(i, (paths, _, wild))| {
                let mut text = format!("{purge_id}\n{}\n{i}\n", t.resource());
                for p in &paths {
                    text.push_str(p);
                    text.push('\n');
                }
                let mut job = new_job(t, JobAction::Invalidate, paths, wild as u32);
                job.caller_reference =
                    format!("cdnsign-{}", &aliyun::sha256_hex(text.as_bytes())[..40]);
                job
            })
            .collect()
    }

    /// One purge by id.
    pub fn get(&self, id: &str) -> Result<PurgeView, PurgeError> {
        let record = self
            .store
            .get(id)?
            .ok_or_else(|| PurgeError::NotFound(id.to_owned()))?;
        Ok(PurgeView {
            record,
            deduplicated: false,
        })
    }

    /// Newest first: up to `page_size` purges older than `page_token`, and the next token.
    pub fn list(
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
        let recs = self.store.list(before, size + 1, target)?;
        let more = recs.len() > size;
        let recs: Vec<_> = recs.into_iter().take(size).collect();
        let next = match (more, recs.last()) {
            (true, Some(r)) => r.seq.to_string(),
            _ => String::new(),
        };
        Ok((recs, next))
    }

    /// Background worker: polls and sends until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let interval = Duration::from_millis(self.cfg.poll_interval_ms);
        loop {
            {
                let _guard = self.work.lock().await;
                let deadline =
                    Instant::now() + Duration::from_secs(self.cfg.background_deadline_seconds);
                self.pass(deadline, true).await;
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One scheduler pass over every unfinished purge (caller holds `work`): poll jobs in
    /// progress (when `poll`), then send waiting jobs that fit, oldest purge first. Returns
    /// the first non-retryable error per purge met in this pass.
    async fn pass(&self, deadline: Instant, poll: bool) -> HashMap<String, ProviderError> {
        let mut failures = HashMap::new();
        let mut active = match self.store.active() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "cannot read unfinished purges");
                return failures;
            }
        };
        let before: Vec<PurgeRecord> = active.clone();
        if poll {
            for rec in &mut active {
                for job in rec
                    .jobs
                    .iter_mut()
                    .filter(|j| j.state == JobState::InProgress)
                {
                    self.poll_job(&rec.target, job, deadline).await;
                }
            }
        }
        // In-progress counts per CloudFront distribution, computed once per pass.
        let mut room: HashMap<String, Option<Counts>> = HashMap::new();
        let mut ours: HashMap<String, HashMap<String, Counts>> = HashMap::new();
        for j in active
            .iter()
            .flat_map(|r| r.jobs.iter())
            .filter(|j| j.provider == ProviderKind::Cloudfront && j.state == JobState::InProgress)
        {
            let n = j.paths.len() as u32;
            ours.entry(j.resource.clone())
                .or_default()
                .insert(j.provider_job_id.clone(), (n - j.wildcards, j.wildcards));
        }
        for rec in &mut active {
            let mut first_error = None;
            for job in rec.jobs.iter_mut().filter(|j| j.state == JobState::Waiting) {
                if let Some(e) = self
                    .send_job(&rec.target, job, deadline, &mut room, &ours)
                    .await
                {
                    first_error.get_or_insert(e);
                }
            }
            if let Some(e) = first_error {
                failures.insert(rec.id.clone(), e);
            }
        }
        for (rec, old) in active.iter().zip(before.iter()) {
            self.save(rec, old);
        }
        failures
    }

    /// Stores a record a pass changed, counts job transitions and announces it.
    fn save(&self, rec: &PurgeRecord, old: &PurgeRecord) {
        if rec == old {
            return;
        }
        for (job, was) in rec.jobs.iter().zip(old.jobs.iter()) {
            if job.state != was.state {
                count_transition(job, was.state);
            }
        }
        if let Err(e) = self.store.update(rec) {
            tracing::error!(purge_id = %rec.id, error = %e, "cannot store purge state");
            return;
        }
        let _ = self.changes.send(rec.id.clone());
        if rec.is_finished() {
            tracing::info!(purge_id = %rec.id, "purge finished");
        }
    }

    /// One purge with its in-progress jobs polled now (at most once a second per purge, and
    /// only if the scheduler is free before `deadline`); otherwise as stored.
    pub async fn get_fresh(&self, id: &str, deadline: Instant) -> Result<PurgeView, PurgeError> {
        let view = self.get(id)?;
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
        let Ok(_guard) = tokio::time::timeout_at(deadline, self.work.lock()).await else {
            return Ok(view);
        };
        let mut rec = self.get(id)?.record;
        let old = rec.clone();
        let target = rec.target.clone();
        // A slow provider cannot hold the answer past the deadline; a poll cut short
        // changes nothing.
        let _ = tokio::time::timeout_at(deadline, async {
            for job in rec
                .jobs
                .iter_mut()
                .filter(|j| j.state == JobState::InProgress)
            {
                self.poll_job(&target, job, deadline).await;
            }
        })
        .await;
        self.save(&rec, &old);
        Ok(PurgeView {
            record: rec,
            deduplicated: false,
        })
    }

    fn leg(&self, target: &str, job: &JobRecord) -> Option<Arc<Leg>> {
        self.legs
            .get(target)?
            .iter()
            .find(|l| l.target.provider == job.provider && l.target.resource() == job.resource)
            .cloned()
    }

    /// Tries to send one waiting job; returns the error when it failed for good.
    async fn send_job(
        &self,
        target: &str,
        job: &mut JobRecord,
        deadline: Instant,
        room: &mut HashMap<String, Option<Counts>>,
        ours: &HashMap<String, HashMap<String, Counts>>,
    ) -> Option<ProviderError> {
        let Some(leg) = self.leg(target, job) else {
            job.state = JobState::Failed;
            job.detail = format!(
                "target {target:?} no longer has {} {} configured",
                job.provider.as_str(),
                job.resource
            );
            job.updated_at_ms = now_ms();
            return None;
        };
        let backing_off = job.not_before_ms > now_ms();
        let result = match &leg.client {
            LegClient::CloudFront(cf) => {
                let dist = job.resource.clone();
                if backing_off {
                    // Later jobs of this distribution keep their place behind this one.
                    room.insert(dist, None);
                    return None;
                }
                if !room.contains_key(&dist) {
                    let empty = HashMap::new();
                    let mine = ours.get(&dist).unwrap_or(&empty);
                    let counts = self.in_flight(cf, &dist, mine, deadline).await;
                    room.insert(dist.clone(), Some(counts));
                }
                // `None`: an earlier job of this distribution waits; keep FIFO order.
                let (files, wild) = room.get(&dist).copied().flatten()?;
                let need_files = job.paths.len() as u32 - job.wildcards;
                let fits = files + need_files <= self.cfg.cloudfront_max_files_in_progress
                    && wild + job.wildcards <= self.cfg.cloudfront_max_wildcards_in_progress;
                if !fits {
                    let detail = format!(
                        "waiting for room on distribution {dist}: {files} of {} file paths and {wild} of {} wildcard paths in progress; this job needs {need_files} and {}",
                        self.cfg.cloudfront_max_files_in_progress,
                        self.cfg.cloudfront_max_wildcards_in_progress,
                        job.wildcards
                    );
                    if job.detail != detail {
                        job.detail = detail;
                        job.updated_at_ms = now_ms();
                    }
                    room.insert(dist, None);
                    return None;
                }
                job.attempts += 1;
                let (r, attempts) = retry(
                    self.backoff,
                    deadline,
                    |_| cf.create(&dist, &job.caller_reference, &job.paths),
                    retry_class,
                )
                .await;
                count_retries(ProviderKind::Cloudfront, "CreateInvalidation", attempts);
                match r {
                    Ok(inv) => {
                        room.insert(dist, Some((files + need_files, wild + job.wildcards)));
                        let completed = inv.is_completed();
                        job.provider_job_id = inv.id;
                        job.state = if completed {
                            JobState::Completed
                        } else {
                            JobState::InProgress
                        };
                        job.status_text = inv.status;
                        job.detail = String::new();
                        Ok(())
                    }
                    Err(e) => {
                        if e.class == ErrorClass::Busy {
                            room.insert(dist, None);
                        }
                        Err(e)
                    }
                }
            }
            LegClient::Aliyun(_) if backing_off => return None,
            LegClient::Aliyun(client) => {
                job.attempts += 1;
                let operation = if job.action == JobAction::Push {
                    "PushObjectCache"
                } else {
                    "RefreshObjectCaches"
                };
                let (r, attempts) = retry(
                    self.backoff,
                    deadline,
                    |_| async {
                        match job.action {
                            JobAction::Push => client.push(&job.paths).await,
                            JobAction::RefreshDirectory => client.refresh(&job.paths, true).await,
                            _ => client.refresh(&job.paths, false).await,
                        }
                    },
                    retry_class,
                )
                .await;
                count_retries(ProviderKind::Aliyun, operation, attempts);
                r.map(|task| {
                    job.provider_job_id = task;
                    job.state = JobState::InProgress;
                    job.status_text = "Refreshing".into();
                    job.detail = String::new();
                })
            }
        };
        job.updated_at_ms = now_ms();
        match result {
            Ok(()) => {
                tracing::info!(
                    provider = job.provider.as_str(),
                    resource = %job.resource,
                    provider_job_id = %job.provider_job_id,
                    paths = job.paths.len(),
                    "purge job sent"
                );
                None
            }
            Err(e) if e.class.is_retryable() => {
                // Exponential backoff with full jitter across passes, too.
                let wait = self.backoff.delay(job.attempts);
                job.not_before_ms = now_ms() + wait.as_millis() as i64;
                job.detail = format!("not sent yet, next try in {} ms: {e}", wait.as_millis());
                tracing::warn!(error = %e, "purge job not sent; will retry");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "purge job failed");
                job.state = JobState::Failed;
                job.detail = e.to_string();
                Some(e)
            }
        }
    }

    /// File and wildcard paths in progress on a distribution: every InProgress
    /// invalidation ListInvalidations shows (ours from the store, others by
    /// GetInvalidation, cached), plus ours the list does not show yet.
    async fn in_flight(
        &self,
        cf: &CloudFront,
        dist: &str,
        ours: &HashMap<String, Counts>,
        deadline: Instant,
    ) -> Counts {
        let (listed, attempts) = retry(
            self.backoff,
            deadline,
            |_| cf.in_progress(dist, 5),
            retry_class,
        )
        .await;
        count_retries(ProviderKind::Cloudfront, "ListInvalidations", attempts);
        let listed = match listed {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "ListInvalidations failed; counting our own invalidations only");
                return ours.values().fold((0, 0), |(f, w), (a, b)| (f + a, w + b));
            }
        };
        if let Ok(mut m) = self.foreign.lock() {
            m.retain(|(d, id), _| d != dist || listed.contains(id));
        }
        let mut total: Counts = (0, 0);
        for id in &listed {
            let cached = ours.get(id).copied().or_else(|| {
                self.foreign
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&(dist.to_owned(), id.clone())).copied())
            });
            let c = match cached {
                Some(c) => c,
                None => match cf.get(dist, id).await {
                    Ok(inv) => {
                        let wild = inv.paths.iter().filter(|p| p.ends_with('*')).count() as u32;
                        let c = (inv.paths.len() as u32 - wild, wild);
                        if let Ok(mut m) = self.foreign.lock() {
                            m.insert((dist.to_owned(), id.clone()), c);
                        }
                        c
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "GetInvalidation failed while counting room");
                        continue;
                    }
                },
            };
            total = (total.0 + c.0, total.1 + c.1);
        }
        total
    }

    async fn poll_job(&self, target: &str, job: &mut JobRecord, deadline: Instant) {
        let Some(leg) = self.leg(target, job) else {
            return;
        };
        match &leg.client {
            LegClient::CloudFront(cf) => {
                let (r, attempts) = retry(
                    self.backoff,
                    deadline,
                    |_| cf.get(&job.resource, &job.provider_job_id),
                    retry_class,
                )
                .await;
                count_retries(ProviderKind::Cloudfront, "GetInvalidation", attempts);
                match r {
                    Ok(inv) => {
                        if inv.is_completed() {
                            job.state = JobState::Completed;
                            job.updated_at_ms = now_ms();
                        }
                        job.status_text = inv.status;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot poll invalidation"),
                }
            }
            LegClient::Aliyun(client) => {
                let ids: Vec<&str> = job
                    .provider_job_id
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                let mut tasks = Vec::new();
                for chunk in ids.chunks(aliyun::MAX_TASK_IDS_PER_CALL) {
                    let (r, attempts) = retry(
                        self.backoff,
                        deadline,
                        |_| client.tasks_by_id(chunk),
                        retry_class,
                    )
                    .await;
                    count_retries(ProviderKind::Aliyun, "DescribeRefreshTaskById", attempts);
                    match r {
                        Ok(mut t) => {
                            if t.is_empty()
                                && let Ok(more) = client.tasks(chunk[0]).await
                            {
                                t = more;
                            }
                            tasks.extend(t);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot poll refresh task");
                            return;
                        }
                    }
                }
                if tasks.is_empty() {
                    return;
                }
                if let Some(f) = tasks.iter().find(|t| t.status == "Failed") {
                    job.state = JobState::Failed;
                    job.status_text = "Failed".into();
                    job.detail = format!("task {} failed: {}", f.task_id, f.description);
                } else if tasks.iter().all(|t| t.status == "Complete") {
                    job.state = JobState::Completed;
                    job.status_text = "Complete".into();
                } else {
                    let done = tasks.iter().filter(|t| t.status == "Complete").count();
                    job.status_text =
                        format!("Refreshing ({done} of {} tasks complete)", tasks.len());
                }
                job.updated_at_ms = now_ms();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapse_is_off_by_default_and_groups_only_past_the_threshold() {
        let items = |v: &[&str]| {
            v.iter()
                .map(|p| CloudFrontPath::File((*p).to_owned()))
                .collect::<Vec<_>>()
        };
        let many = items(&["/img/1.png", "/img/2.png", "/img/3.png", "/css/a.css"]);
        assert_eq!(collapse(many.clone(), 0), many);
        assert_eq!(collapse(many.clone(), 3), many, "3 is not more than 3");
        assert_eq!(
            collapse(many, 2),
            vec![
                CloudFrontPath::Wildcard("/img/*".into()),
                CloudFrontPath::File("/css/a.css".into()),
            ]
        );
    }

    #[test]
    fn error_labels_are_a_fixed_set_and_carry_no_request_data() {
        let secret = "SecretValue-should-never-be-a-label";
        let provider = |class| {
            PurgeError::Provider(ProviderError {
                provider: ProviderKind::Aliyun,
                operation: secret.into(),
                code: secret.into(),
                message: secret.into(),
                http_status: Some(400),
                class,
            })
        };
        let errors = [
            PurgeError::UnknownTarget(secret.into()),
            PurgeError::Invalid {
                field: "paths",
                reason: secret.into(),
            },
            PurgeError::NotFound(secret.into()),
            PurgeError::KeyReused(secret.into()),
            PurgeError::QuotaExhausted {
                domain: secret.into(),
                what: "URLs",
                needed: 1,
                remain: 0,
            },
            PurgeError::Store(StoreError(secret.into())),
            provider(ErrorClass::Throttled),
            provider(ErrorClass::Busy),
            provider(ErrorClass::Unavailable),
            provider(ErrorClass::Denied),
            provider(ErrorClass::NotFound),
            provider(ErrorClass::Invalid),
            provider(ErrorClass::Conflict),
            provider(ErrorClass::QuotaExhausted),
            provider(ErrorClass::Clock),
            provider(ErrorClass::Credentials),
            provider(ErrorClass::Other),
        ];
        let mut labels = HashSet::new();
        for e in &errors {
            let l = e.label();
            assert!(!l.contains("Secret"));
            assert!(
                l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{l}"
            );
            labels.insert(l);
        }
        assert_eq!(labels.len(), errors.len(), "one label per kind of error");
    }
}
